#ifndef FLEDGER_SLOG_H
#define FLEDGER_SLOG_H

#include <stdbool.h>

#include <jansson.h>

#include "fledger/status.h"

/*
 * Structured logs for the services (CONTRACT §10): one JSON object a line,
 * written to stderr with a single write() per line, so lines from several
 * threads never interleave:
 *
 *   {"ts":"2026-11-26T21:00:00.123456Z","level":"info","msg":"listening","listen":"127.0.0.1:8080"}
 *
 * Only services log; library code returns statuses and lets its caller
 * decide. Text that is not valid UTF-8 is logged with U+FFFD in place of the
 * bad bytes, so every line stays valid JSON.
 */

enum fl_slog_level {
	FL_SLOG_DEBUG,
	FL_SLOG_INFO,
	FL_SLOG_WARN,
	FL_SLOG_ERROR,
};

/* Lines below this level are dropped. The default is FL_SLOG_INFO. */
void fl_slog_set_level(enum fl_slog_level min_level);

/* Parses "debug", "info", "warn" or "error" (for a --log-level flag). */
enum fl_status fl_slog_level_parse(const char *text, enum fl_slog_level *ret_level);

/*
 * Sends lines to fd instead of stderr (tests use a pipe). The fd stays the
 * caller's to close.
 */
void fl_slog_set_fd(int fd);

/*
 * Logs msg with string fields given as key, value pairs, ended by NULL:
 *
 *   fl_slog(FL_SLOG_INFO, "listening", "listen", addr, "tls", "on", NULL);
 *
 * A NULL value logs the key with a JSON null. The keys "ts", "level" and
 * "msg" are the line's own and a field with one of those names is dropped.
 */
void fl_slog(enum fl_slog_level level, const char *msg, ...) __attribute__((sentinel));

/*
 * Logs msg with the members of the JSON object fields (numbers, nested
 * objects and all). Steals the reference to fields, which may be NULL, so a
 * json_pack() result can be passed directly.
 */
void fl_slog_json(enum fl_slog_level level, const char *msg, json_t *fields);

#endif
