#ifndef FLEDGER_CLI_CLI_H
#define FLEDGER_CLI_CLI_H

/*
 * The fledger command-line tool: main.c finds the command, parses its flags
 * (the global ones of every command plus its own) and runs it; one file per
 * group of commands; common.c holds what they share (the token, HTTP
 * requests and their error messages, progress lines).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "fledger/config.h"
#include "fledger/httpc.h"
#include "fledger/status.h"

/* Exit codes of every command. */
enum {
	FL_CLI_OK = 0,	  /* done; verification passed */
	FL_CLI_FAIL = 1,  /* the work failed, or verification did not pass */
	FL_CLI_USAGE = 2, /* bad command line */
};

/* What a running command sees. */
struct fl_cli {
	const struct fl_config *config;
	const char *const *args; /* positional arguments after the command words */
	size_t n_args;
	const char *command_url;
	const char *query_url;
	int timeout_ms;
	struct fl_httpc *http; /* keeps its connections across the command's requests */
	char *token;	       /* from --token-file or FLEDGER_TOKEN; loaded on first use */
	bool token_loaded;
};

struct fl_cli_command {
	const char *group;			/* "audit" */
	const char *sub;			/* "export", or NULL for a one-word command */
	const char *args_usage;			/* "DIR", or "" */
	const char *summary;			/* one line for the command list */
	const char *description;		/* paragraphs for --help */
	const struct fl_config_option *options; /* the command's own flags */
	size_t n_options;
	size_t min_args, max_args;
	int (*run)(struct fl_cli *cli);
	bool offline; /* reaches no service: --help leaves the connection options out */
};

extern const struct fl_cli_command fl__cli_keygen_command;
extern const struct fl_cli_command fl__cli_token_command;
extern const struct fl_cli_command fl__cli_keys_rotate_command;
extern const struct fl_cli_command fl__cli_views_apply_command;
extern const struct fl_cli_command fl__cli_write_command;
extern const struct fl_cli_command fl__cli_read_command;
extern const struct fl_cli_command fl__cli_log_verify_command;
extern const struct fl_cli_command fl__cli_audit_export_command;
extern const struct fl_cli_command fl__cli_audit_verify_command;
extern const struct fl_cli_command fl__cli_demo_command;
extern const struct fl_cli_command fl__cli_historical_command;
extern const struct fl_cli_command fl__cli_receipt_verify_command;

/* ---- common.c ------------------------------------------------------------ */

/* Prints "fledger: <message>" and a newline on stderr. */
void fl__cli_error(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Prints a progress line ("fledger: <message>") on stderr. */
void fl__cli_progress(const char *format, ...) __attribute__((format(printf, 1, 2)));

/*
 * The bearer token: the trimmed content of --token-file, else
 * $FLEDGER_TOKEN. NULL when neither is set (or the file cannot be read:
 * then an error was printed); with required, a missing token is also
 * reported.
 */
const char *fl__cli_token(struct fl_cli *cli, bool required);

/*
 * One HTTP exchange with base_url + path (method "GET", "POST"...), with
 * the bearer token when with_token. FL_OK when an answer arrived, whatever
 * its status (the caller frees *ret_body). Otherwise the error was printed.
 */
enum fl_status fl__cli_http(struct fl_cli *cli, const char *method, const char *base_url,
			    const char *path, bool with_token, const char *content_type,
			    const char *body, size_t body_len, unsigned *ret_status,
			    char **ret_body, size_t *ret_len);

/*
 * Prints "fledger: <what>: HTTP <status> <code>: <message>" from an error
 * answer of CONTRACT §9 (or its raw text when it is not one).
 */
void fl__cli_print_http_error(const char *what, unsigned status, const char *body, size_t len);

/*
 * GETs base_url + path. FL_OK with the body of a 200 answer (the caller
 * frees *ret_body); otherwise an error, after printing why (*ret_status,
 * may be NULL, gets the status whenever an answer arrived).
 */
enum fl_status fl__cli_get_text(struct fl_cli *cli, const char *base_url, const char *path,
				bool with_token, unsigned *ret_status, char **ret_body,
				size_t *ret_len);

/*
 * GETs base_url + path and parses its JSON answer. NULL, after printing
 * why, unless the status is 200 and the body is JSON (*ret_status, may be
 * NULL, gets the status whenever an answer arrived).
 */
json_t *fl__cli_get_json(struct fl_cli *cli, const char *base_url, const char *path,
			 bool with_token, unsigned *ret_status);

/* Percent-encodes text for a path segment or a query value (caller frees). */
char *fl__cli_url_encode(const char *text);

/* Parses a decimal unsigned integer in [min, max]; false when it is not one. */
bool fl__cli_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *ret_value);

/* Reads a file, or stdin for "-", into a new NUL-terminated buffer. */
enum fl_status fl__cli_read_input(const char *path, char **ret_text, size_t *ret_len);

#endif
