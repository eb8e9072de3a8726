#include "fledger/slog.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fledger/util.h"

static _Atomic int min_level = FL_SLOG_INFO;
static _Atomic int log_fd = STDERR_FILENO;

/* Serializes the write() of lines longer than the kernel writes at once. */
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {
    [FL_SLOG_DEBUG] = "debug",
    [FL_SLOG_INFO] = "info",
    [FL_SLOG_WARN] = "warn",
    [FL_SLOG_ERROR] = "error",
};

void fl_slog_set_level(enum fl_slog_level level)
{
	atomic_store(&min_level, (int)level);
}

enum fl_status fl_slog_level_parse(const char *text, enum fl_slog_level *ret_level)
{
	if (text == NULL || ret_level == NULL)
		return FL_ERR_INVALID;
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(text, level_names[i]) == 0) {
			*ret_level = (enum fl_slog_level)i;
			return FL_OK;
		}
	}
	return FL_ERR_INVALID;
}

void fl_slog_set_fd(int fd)
{
	atomic_store(&log_fd, fd);
}

/* The length of the valid UTF-8 sequence at text, or 0 when it is not one. */
static size_t utf8_sequence_len(const unsigned char *text)
{
	unsigned char c = text[0];
	size_t len;
	uint32_t codepoint;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		codepoint = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		codepoint = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		codepoint = c & 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < len; i++) {
		if ((text[i] & 0xc0) != 0x80)
			return 0;
		codepoint = (codepoint << 6) | (text[i] & 0x3f);
	}
	if ((len == 3 && codepoint < 0x800) || (len == 4 && codepoint < 0x10000) ||
	    codepoint > 0x10ffff || (codepoint >= 0xd800 && codepoint <= 0xdfff))
		return 0;
	return len;
}

/*
 * A JSON string of text; invalid UTF-8 bytes become U+FFFD so a log line is
 * never lost to a bad byte from a client.
 */
static json_t *string_or_repaired(const char *text)
{
	json_t *string = json_string(text);
	size_t len, out_len = 0;
	char *repaired;

	if (string != NULL || text == NULL)
		return string;
	len = strlen(text);
	repaired = malloc(3 * len + 1);
	if (repaired == NULL)
		return NULL;
	for (size_t i = 0; i < len;) {
		size_t sequence = utf8_sequence_len((const unsigned char *)text + i);
		if (sequence == 0) {
			memcpy(repaired + out_len, "\xef\xbf\xbd", 3);
			out_len += 3;
			i++;
		} else {
			memcpy(repaired + out_len, text + i, sequence);
			out_len += sequence;
			i += sequence;
		}
	}
	repaired[out_len] = '\0';
	string = json_stringn(repaired, out_len);
	free(repaired);
	return string;
}

static bool reserved_key(const char *key)
{
	return strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "msg") == 0;
}

static void write_line(const char *text, size_t len)
{
	int fd = atomic_load(&log_fd);

	pthread_mutex_lock(&write_lock);
	while (len > 0) {
		ssize_t written = write(fd, text, len);
		if (written < 0) {
			if (errno == EINTR)
				continue;
			break; /* Nowhere left to report a failure to log. */
		}
		text += written;
		len -= (size_t)written;
	}
	pthread_mutex_unlock(&write_lock);
}

/* Builds, writes and frees the line for msg; steals fields. */
static void emit(enum fl_slog_level level, const char *msg, json_t *fields)
{
	char ts[FL_TIME_TEXT_LEN];
	json_t *line;
	const char *key;
	json_t *value;
	char *text;
	size_t len;

	if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
		level = FL_SLOG_ERROR;
	fl_time_format(fl_time_now_us(), ts);
	line = json_object();
	if (line == NULL)
		goto out;
	json_object_set_new(line, "ts", json_string(ts));
	json_object_set_new(line, "level", json_string(level_names[level]));
	json_object_set_new(line, "msg", string_or_repaired(msg != NULL ? msg : ""));
	if (json_is_object(fields)) {
		json_object_foreach(fields, key, value)
		{
			if (!reserved_key(key))
				json_object_set(line, key, value);
		}
	}
	text = json_dumps(line, JSON_COMPACT);
	if (text == NULL)
		goto out;
	len = strlen(text);
	text[len] = '\n'; /* The NUL becomes the newline: one write for the line. */
	write_line(text, len + 1);
	free(text);
out:
	json_decref(line);
	json_decref(fields);
}

void fl_slog(enum fl_slog_level level, const char *msg, ...)
{
	va_list args;
	json_t *fields;
	const char *key;

	if ((int)level < atomic_load(&min_level))
		return;
	fields = json_object();
	va_start(args, msg);
	while ((key = va_arg(args, const char *)) != NULL) {
		const char *value = va_arg(args, const char *);
		json_t *field = value != NULL ? string_or_repaired(value) : json_null();

		if (fields != NULL)
			json_object_set_new(fields, key, field);
		else
			json_decref(field);
	}
	va_end(args);
	emit(level, msg, fields);
}

void fl_slog_json(enum fl_slog_level level, const char *msg, json_t *fields)
{
	if ((int)level < atomic_load(&min_level)) {
		json_decref(fields);
		return;
	}
	emit(level, msg, fields);
}
