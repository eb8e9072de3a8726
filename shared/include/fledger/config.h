#ifndef FLEDGER_CONFIG_H
#define FLEDGER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fledger/status.h"

/*
 * Command-line flags with FLEDGER_* environment variables behind them
 * (CONTRACT §11). A program describes its settings in a table:
 *
 *   static const struct fl_config_option options[] = {
 *           {"listen", "FLEDGER_LISTEN", "127.0.0.1:8080", "HOST:PORT to serve on", false},
 *           {"tls-cert", "FLEDGER_TLS_CERT", NULL, "server certificate (PEM)", false},
 *           {"verbose", NULL, "false", "log debug lines", true},
 *   };
 *
 * and reads a value by flag name. A value comes from, in order of
 * precedence: the command line (`--listen 0.0.0.0:80` or
 * `--listen=0.0.0.0:80`), the environment variable (an empty variable counts
 * as unset), the default. A flag given twice keeps the last value for
 * fl_config_get; fl_config_get_list reads every occurrence (a repeatable
 * flag such as --trust-key). A boolean
 * flag takes no separate value (`--verbose`, or `--verbose=false`); boolean
 * text is true/false, yes/no, on/off or 1/0. Arguments that are not flags,
 * and every argument after `--`, are positional (the CLI's commands).
 */

struct fl_config_option {
	const char *flag;	   /* name without dashes: "listen" for --listen */
	const char *env;	   /* "FLEDGER_LISTEN", or NULL for none */
	const char *default_value; /* NULL: unset unless given */
	const char *help;	   /* one line for the usage text */
	bool is_bool;
};

struct fl_config;

/*
 * Parses argv[1..argc-1] against options (which must outlive the result).
 * `--help` or `-h` is always accepted: it makes fl_config_wants_help()
 * true and parsing continues. Errors: FL_ERR_INVALID for an unknown flag, a
 * flag without its value or a bad boolean, with a one-line message for a
 * person written into error (error_size bytes, may be 0); FL_ERR_NOMEM.
 * On success *ret_config is the caller's to fl_config_destroy().
 */
enum fl_status fl_config_parse(const struct fl_config_option *options, size_t n_options, int argc,
			       char *const *argv, char *error, size_t error_size,
			       struct fl_config **ret_config);

void fl_config_destroy(struct fl_config *config);

/* True when --help or -h was given: print fl_config_usage() and exit 0. */
bool fl_config_wants_help(const struct fl_config *config);

/*
 * The value of a flag (owned by config), or NULL when it is unset or the
 * flag is not in the table.
 */
const char *fl_config_get(const struct fl_config *config, const char *flag);

/*
 * Every value of a repeatable flag: each occurrence on the command line, in
 * order, or, when the flag is not given, its environment variable (else its
 * default); each value is split at any of the characters in separators
 * (e.g. ",:"; NULL or "" splits nothing) and empty pieces are skipped.
 * *ret_values is a new NULL-terminated array of *ret_count new strings,
 * freed with fl_config_list_free (an unset flag gives an empty array).
 * FL_ERR_INVALID for a flag not in the table; FL_ERR_NOMEM.
 */
enum fl_status fl_config_get_list(const struct fl_config *config, const char *flag,
				  const char *separators, char ***ret_values, size_t *ret_count);

/* Frees an array from fl_config_get_list. Accepts NULL. */
void fl_config_list_free(char **values);

/* The value of a boolean flag; false when unset or unknown. */
bool fl_config_get_bool(const struct fl_config *config, const char *flag);

/*
 * The value of a flag as a decimal integer in [min, max]. FL_ERR_NOT_FOUND
 * when unset, FL_ERR_INVALID when not a number or out of range.
 */
enum fl_status fl_config_get_int(const struct fl_config *config, const char *flag, int64_t min,
				 int64_t max, int64_t *ret_value);

/*
 * The value of a flag as a duration ("30s", "5m", "24h", "7d", as in view
 * definitions) in microseconds within [min_us, max_us]. FL_ERR_NOT_FOUND when
 * unset, FL_ERR_INVALID when not a duration or out of range.
 */
enum fl_status fl_config_get_duration(const struct fl_config *config, const char *flag,
				      int64_t min_us, int64_t max_us, int64_t *ret_us);

/* Positional arguments, in order. */
size_t fl_config_positional_count(const struct fl_config *config);
const char *fl_config_positional(const struct fl_config *config, size_t index);

/*
 * Usage text listing every option with its help, environment variable and
 * default: a new malloc'd string the caller frees, or NULL without memory.
 */
char *fl_config_usage(const char *program, const struct fl_config_option *options,
		      size_t n_options);

#endif
