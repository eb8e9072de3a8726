#ifndef FLEDGER_UTIL_H
#define FLEDGER_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "fledger/status.h"

/*
 * Small encoding helpers shared by every module: lowercase hex, standard
 * base64 (with padding), RFC 3339 timestamps and big-endian integers.
 */

/* Writes 2*len lowercase hex digits and a NUL to out (2*len+1 bytes). */
void fl_hex_encode(const uint8_t *bytes, size_t len, char *out);

/* Decodes exactly 2*len hex digits (either case) into len bytes. */
enum fl_status fl_hex_decode(const char *hex, uint8_t *ret_bytes, size_t len);

/* Length of the base64 text of len bytes, without the NUL. */
size_t fl_base64_encoded_len(size_t len);

/* Writes base64 of bytes and a NUL to out (fl_base64_encoded_len(len)+1). */
void fl_base64_encode(const uint8_t *bytes, size_t len, char *out);

/*
 * Decodes padded standard base64 text of text_len characters into a new
 * malloc'd buffer (the caller frees it). Rejects any other character.
 */
enum fl_status fl_base64_decode(const char *text, size_t text_len, uint8_t **ret_bytes,
				size_t *ret_len);

/*
 * Parses an RFC 3339 timestamp ("2026-11-26T21:00:00.123Z",
 * "...+02:00") into microseconds since the Unix epoch, UTC. A zone is
 * required; more than 6 fractional digits are truncated.
 */
enum fl_status fl_time_parse(const char *text, int64_t *ret_us);

#define FL_TIME_TEXT_LEN 28 /* "2026-11-26T21:00:00.123000Z" + NUL */

/* Formats microseconds since the epoch as "YYYY-MM-DDTHH:MM:SS.ffffffZ". */
void fl_time_format(int64_t us, char out[FL_TIME_TEXT_LEN]);

/* Wall-clock time in microseconds since the epoch. */
int64_t fl_time_now_us(void);

/*
 * Formats a one-line message for a person into error (error_size bytes):
 * the error-text out-parameter of the project's functions. Does nothing
 * when error is NULL or error_size is 0.
 */
void fl_set_error(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Monotonic time in microseconds, for measuring durations. */
int64_t fl_time_mono_us(void);

/*
 * Timed waits use CLOCK_MONOTONIC, so that a step of the wall clock neither
 * stretches nor cuts them: fl_cond_init_monotonic sets up such a condition
 * variable (FL_ERR_NOMEM or FL_ERR_IO if it cannot), fl_deadline_after_us
 * gives the absolute time to pass to pthread_cond_timedwait.
 */
enum fl_status fl_cond_init_monotonic(pthread_cond_t *cond);
struct timespec fl_deadline_after_us(int64_t us);

/* Parses "30s", "5m", "24h", "7d" into microseconds. */
enum fl_status fl_duration_parse(const char *text, int64_t *ret_us);

static inline void fl_put_be64(uint8_t out[8], uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		out[i] = (uint8_t)v;
		v >>= 8;
	}
}

static inline uint64_t fl_get_be64(const uint8_t in[8])
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | in[i];
	return v;
}

/*
 * mkdir -p: creates dir and its missing parents with mode. FL_ERR_INVALID
 * for "" or a path past 4095 bytes; otherwise the status of the mkdir that
 * failed (fl_status_of_errno), with the system's reason in error.
 */
enum fl_status fl_make_dirs(const char *dir, unsigned mode, char *error, size_t error_size);

/* Reads a whole file into a new NUL-terminated malloc'd buffer. */
enum fl_status fl_file_read(const char *path, char **ret_text, size_t *ret_len);

#endif
