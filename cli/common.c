/*
 * What the commands share: messages on stderr, the bearer token, HTTP
 * requests with their error messages, URL encoding, small parsers.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "fledger/httpc.h"
#include "fledger/text.h"
#include "fledger/util.h"

void fl__cli_error(const char *format, ...)
{
	va_list args;
	fputs("fledger: ", stderr);
	va_start(args, format);
	vfprintf(stderr, format, args);
	va_end(args);
	fputc('\n', stderr);
}

void fl__cli_progress(const char *format, ...)
{
	va_list args;
	fputs("fledger: ", stderr);
	va_start(args, format);
	vfprintf(stderr, format, args);
	va_end(args);
	fputc('\n', stderr);
	fflush(stderr);
}

/* Removes leading and trailing white space in place; returns text. */
static char *trim(char *text)
{
	size_t len = strlen(text), start = 0;
	while (len && isspace((unsigned char)text[len - 1]))
		text[--len] = '\0';
	while (start < len && isspace((unsigned char)text[start]))
		start++;
	memmove(text, text + start, len - start + 1);
	return text;
}

const char *fl__cli_token(struct fl_cli *cli, bool required)
{
	if (!cli->token_loaded) {
		const char *path = fl_config_get(cli->config, "token-file");
		const char *env = getenv("FLEDGER_TOKEN");
		cli->token_loaded = true;
		if (path) {
			char *text;
			size_t len;
			enum fl_status st = fl_file_read(path, &text, &len);
			if (st != FL_OK) {
				fl__cli_error("cannot read the token file %s: %s", path,
					      fl_status_str(st));
				return NULL;
			}
			cli->token = trim(text);
			if (!cli->token[0]) {
				fl__cli_error("the token file %s is empty", path);
				free(cli->token);
				cli->token = NULL;
				return NULL;
			}
		} else if (env && env[0]) {
			cli->token = strdup(env);
			if (cli->token)
				trim(cli->token);
		}
		if (!cli->token && required)
			fl__cli_error("this command needs a token: --token-file FILE or "
				      "FLEDGER_TOKEN");
	}
	return cli->token;
}

enum fl_status fl__cli_http(struct fl_cli *cli, const char *method, const char *base_url,
			    const char *path, bool with_token, const char *content_type,
			    const char *body, size_t body_len, unsigned *ret_status,
			    char **ret_body, size_t *ret_len)
{
	const char *token = NULL;
	if (with_token && !(token = fl__cli_token(cli, true)))
		return FL_ERR_DENIED;
	enum fl_status st =
	    fl_httpc_request(cli->http, method, base_url, path, token, content_type, body, body_len,
			     cli->timeout_ms, ret_status, ret_body, ret_len);
	if (st == FL_ERR_INVALID)
		fl__cli_error("%s %s%s: not a usable request (the URL must be http[s]://HOST:PORT)",
			      method, base_url, path);
	else if (st == FL_ERR_UNAVAILABLE)
		fl__cli_error("%s %s%s: cannot reach the service (is it running?)", method,
			      base_url, path);
	else if (st == FL_ERR_TIMEOUT)
		fl__cli_error("%s %s%s: no answer within %d ms (--timeout-ms)", method, base_url,
			      path, cli->timeout_ms);
	else if (st != FL_OK)
		fl__cli_error("%s %s%s: %s", method, base_url, path, fl_status_str(st));
	return st;
}

void fl__cli_print_http_error(const char *what, unsigned status, const char *body, size_t len)
{
	json_t *doc = body ? json_loadb(body, len, 0, NULL) : NULL;
	json_t *error = json_object_get(doc, "error");
	const char *code = json_string_value(json_object_get(error, "code"));
	const char *message = json_string_value(json_object_get(error, "message"));
	const char *field = json_string_value(json_object_get(error, "field"));

	if (code && message)
		fl__cli_error("%s: HTTP %u %s: %s%s%s%s", what, status, code, message,
			      field ? " (field " : "", field ? field : "", field ? ")" : "");
	else
		fl__cli_error("%s: HTTP %u: %.*s", what, status, (int)(len > 300 ? 300 : len),
			      body ? body : "");
	json_decref(doc);
}

enum fl_status fl__cli_get_text(struct fl_cli *cli, const char *base_url, const char *path,
				bool with_token, unsigned *ret_status, char **ret_body,
				size_t *ret_len)
{
	unsigned status;
	char *body;
	size_t len;
	char what[512];

	enum fl_status st = fl__cli_http(cli, "GET", base_url, path, with_token, NULL, NULL, 0,
					 &status, &body, &len);
	if (st != FL_OK)
		return st;
	if (ret_status)
		*ret_status = status;
	if (status != 200) {
		snprintf(what, sizeof(what), "GET %s%s", base_url, path);
		fl__cli_print_http_error(what, status, body, len);
		free(body);
		return FL_ERR_UNAVAILABLE;
	}
	*ret_body = body;
	*ret_len = len;
	return FL_OK;
}

json_t *fl__cli_get_json(struct fl_cli *cli, const char *base_url, const char *path,
			 bool with_token, unsigned *ret_status)
{
	char *body;
	size_t len;
	json_error_t error;

	if (fl__cli_get_text(cli, base_url, path, with_token, ret_status, &body, &len) != FL_OK)
		return NULL;
	json_t *doc = json_loadb(body, len, 0, &error);
	if (!doc)
		fl__cli_error("GET %s%s: the answer is not JSON: %s", base_url, path, error.text);
	free(body);
	return doc;
}

char *fl__cli_url_encode(const char *text)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(3 * strlen(text) + 1), *p = out;
	if (!out)
		return NULL;
	for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
		if (isalnum(*c) || *c == '-' || *c == '_' || *c == '.' || *c == '~') {
			*p++ = (char)*c;
		} else {
			*p++ = '%';
			*p++ = hex[*c >> 4];
			*p++ = hex[*c & 15];
		}
	}
	*p = '\0';
	return out;
}

bool fl__cli_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *ret_value)
{
	char *end;
	if (!text || !isdigit((unsigned char)text[0]))
		return false;
	errno = 0;
	unsigned long long value = strtoull(text, &end, 10);
	if (errno || *end || value < min || value > max)
		return false;
	*ret_value = value;
	return true;
}

enum fl_status fl__cli_read_input(const char *path, char **ret_text, size_t *ret_len)
{
	if (strcmp(path, "-") != 0)
		return fl_file_read(path, ret_text, ret_len);
	struct fl_text text = FL_TEXT_INIT;
	while (fl_text_reserve(&text, 64 * 1024)) {
		size_t n = fread(text.data + text.len, 1, text.cap - text.len - 1, stdin);
		text.len += n;
		text.data[text.len] = '\0';
		if (n > 0)
			continue;
		if (ferror(stdin)) {
			fl_text_free(&text);
			return FL_ERR_IO;
		}
		*ret_text = fl_text_take(&text, ret_len);
		return FL_OK;
	}
	fl_text_free(&text);
	return FL_ERR_NOMEM;
}
