#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fledger/config.h"

static const struct fl_config_option options[] = {
    {"listen", "FLEDGER_LISTEN", "127.0.0.1:8080", "HOST:PORT to serve on", false},
    {"data-dir", "FLEDGER_DATA_DIR", NULL, "LMDB directory", false},
    {"verbose", "FLEDGER_VERBOSE", "false", "log debug lines", true},
    {"max-batch", NULL, "1000", "largest batch", false},
};
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

/* Parses a NULL-terminated argument list (program name first). */
static enum fl_status parse(char *error, size_t error_size, struct fl_config **ret_config, ...)
{
	char *argv[32];
	int argc = 0;
	va_list args;

	va_start(args, ret_config);
	for (char *arg; (arg = va_arg(args, char *)) != NULL;)
		argv[argc++] = arg;
	va_end(args);
	argv[argc] = NULL;
	return fl_config_parse(options, N_OPTIONS, argc, argv, error, error_size, ret_config);
}

static void clear_env(void)
{
	unsetenv("FLEDGER_LISTEN");
	unsetenv("FLEDGER_DATA_DIR");
	unsetenv("FLEDGER_VERBOSE");
}

Test(config, defaults_apply_when_nothing_is_given)
{
	struct fl_config *config;

	clear_env();
	cr_assert_eq(parse(NULL, 0, &config, "svc", NULL), FL_OK);
	cr_assert_str_eq(fl_config_get(config, "listen"), "127.0.0.1:8080");
	cr_assert_null(fl_config_get(config, "data-dir"));
	cr_assert_not(fl_config_get_bool(config, "verbose"));
	cr_assert_null(fl_config_get(config, "no-such-flag"));
	cr_assert_not(fl_config_wants_help(config));
	cr_assert_eq(fl_config_positional_count(config), 0);
	fl_config_destroy(config);
}

Test(config, environment_beats_default_and_flag_beats_environment)
{
	struct fl_config *config;

	clear_env();
	setenv("FLEDGER_LISTEN", "0.0.0.0:9000", 1);
	setenv("FLEDGER_DATA_DIR", "/var/lib/env", 1);
	cr_assert_eq(parse(NULL, 0, &config, "svc", "--data-dir", "/srv/flag", NULL), FL_OK);
	cr_assert_str_eq(fl_config_get(config, "listen"), "0.0.0.0:9000");
	cr_assert_str_eq(fl_config_get(config, "data-dir"), "/srv/flag");
	fl_config_destroy(config);
}

Test(config, empty_environment_variable_counts_as_unset)
{
	struct fl_config *config;

	clear_env();
	setenv("FLEDGER_LISTEN", "", 1);
	cr_assert_eq(parse(NULL, 0, &config, "svc", NULL), FL_OK);
	cr_assert_str_eq(fl_config_get(config, "listen"), "127.0.0.1:8080");
	fl_config_destroy(config);
}

Test(config, equals_form_and_last_flag_wins)
{
	struct fl_config *config;

	clear_env();
	cr_assert_eq(parse(NULL, 0, &config, "svc", "--listen=[::1]:0", "--data-dir=", "--listen",
			   "127.0.0.1:1", NULL),
		     FL_OK);
	cr_assert_str_eq(fl_config_get(config, "listen"), "127.0.0.1:1");
	cr_assert_str_eq(fl_config_get(config, "data-dir"), "");
	fl_config_destroy(config);
}

Test(config, boolean_flags)
{
	struct fl_config *config;

	clear_env();
	cr_assert_eq(parse(NULL, 0, &config, "svc", "--verbose", "pos", NULL), FL_OK);
	cr_assert(fl_config_get_bool(config, "verbose"));
	/* A bool flag does not eat the next argument. */
	cr_assert_eq(fl_config_positional_count(config), 1);
	cr_assert_str_eq(fl_config_positional(config, 0), "pos");
	fl_config_destroy(config);

	setenv("FLEDGER_VERBOSE", "yes", 1);
	cr_assert_eq(parse(NULL, 0, &config, "svc", NULL), FL_OK);
	cr_assert(fl_config_get_bool(config, "verbose"));
	fl_config_destroy(config);

	cr_assert_eq(parse(NULL, 0, &config, "svc", "--verbose=off", NULL), FL_OK);
	cr_assert_not(fl_config_get_bool(config, "verbose"));
	cr_assert_str_eq(fl_config_get(config, "verbose"), "false");
	fl_config_destroy(config);
}

Test(config, bad_boolean_is_refused_with_its_source)
{
	struct fl_config *config = NULL;
	char error[256] = "";

	clear_env();
	cr_assert_eq(parse(error, sizeof(error), &config, "svc", "--verbose=maybe", NULL),
		     FL_ERR_INVALID);
	cr_assert_null(config);
	cr_assert(strstr(error, "--verbose") != NULL, "%s", error);
	cr_assert(strstr(error, "maybe") != NULL, "%s", error);

	setenv("FLEDGER_VERBOSE", "sometimes", 1);
	cr_assert_eq(parse(error, sizeof(error), &config, "svc", NULL), FL_ERR_INVALID);
	cr_assert(strstr(error, "FLEDGER_VERBOSE") != NULL, "%s", error);
}

Test(config, unknown_flag_is_an_error)
{
	struct fl_config *config = NULL;
	char error[256] = "";

	clear_env();
	cr_assert_eq(parse(error, sizeof(error), &config, "svc", "--lisen=1", NULL),
		     FL_ERR_INVALID);
	cr_assert_str_eq(error, "unknown flag --lisen");
	cr_assert_eq(parse(error, sizeof(error), &config, "svc", "-x", NULL), FL_ERR_INVALID);
	cr_assert(strstr(error, "-x") != NULL, "%s", error);
	cr_assert_null(config);
}

Test(config, flag_without_value_is_an_error)
{
	struct fl_config *config = NULL;
	char error[256] = "";

	clear_env();
	cr_assert_eq(parse(error, sizeof(error), &config, "svc", "--listen", NULL), FL_ERR_INVALID);
	cr_assert_str_eq(error, "flag --listen needs a value");
	cr_assert_eq(parse(error, sizeof(error), &config, "svc", "--listen", "--verbose", NULL),
		     FL_ERR_INVALID);
	cr_assert_str_eq(error, "flag --listen needs a value");
	cr_assert_null(config);
}

Test(config, help_is_reported_and_usage_lists_every_option)
{
	struct fl_config *config;
	char *usage;

	clear_env();
	cr_assert_eq(parse(NULL, 0, &config, "svc", "--help", NULL), FL_OK);
	cr_assert(fl_config_wants_help(config));
	fl_config_destroy(config);

	usage = fl_config_usage("command-svc", options, N_OPTIONS);
	cr_assert_not_null(usage);
	cr_assert_str_eq(usage, "Usage: command-svc [options]\n"
				"\n"
				"Options:\n"
				"  --listen VALUE     HOST:PORT to serve on [env FLEDGER_LISTEN] "
				"(default: 127.0.0.1:8080)\n"
				"  --data-dir VALUE   LMDB directory [env FLEDGER_DATA_DIR]\n"
				"  --verbose          log debug lines [env FLEDGER_VERBOSE] "
				"(default: false)\n"
				"  --max-batch VALUE  largest batch (default: 1000)\n"
				"  --help             show this text\n");
	free(usage);
}

Test(config, positional_arguments_and_double_dash)
{
	struct fl_config *config;

	clear_env();
	cr_assert_eq(parse(NULL, 0, &config, "fledger", "audit", "--data-dir", "d", "verify", "--",
			   "--listen", "-", NULL),
		     FL_OK);
	cr_assert_eq(fl_config_positional_count(config), 4);
	cr_assert_str_eq(fl_config_positional(config, 0), "audit");
	cr_assert_str_eq(fl_config_positional(config, 1), "verify");
	cr_assert_str_eq(fl_config_positional(config, 2), "--listen");
	cr_assert_str_eq(fl_config_positional(config, 3), "-");
	cr_assert_null(fl_config_positional(config, 4));
	cr_assert_str_eq(fl_config_get(config, "data-dir"), "d");
	cr_assert_str_eq(fl_config_get(config, "listen"), "127.0.0.1:8080");
	fl_config_destroy(config);
}

Test(config, integers_are_checked_against_their_range)
{
	struct fl_config *config;
	int64_t value = 0;

	clear_env();
	cr_assert_eq(parse(NULL, 0, &config, "svc", NULL), FL_OK);
	cr_assert_eq(fl_config_get_int(config, "max-batch", 1, 10000, &value), FL_OK);
	cr_assert_eq(value, 1000);
	cr_assert_eq(fl_config_get_int(config, "max-batch", 1, 999, &value), FL_ERR_INVALID);
	cr_assert_eq(fl_config_get_int(config, "data-dir", 0, 10, &value), FL_ERR_NOT_FOUND);
	fl_config_destroy(config);

	cr_assert_eq(parse(NULL, 0, &config, "svc", "--max-batch", "12x", NULL), FL_OK);
	cr_assert_eq(fl_config_get_int(config, "max-batch", 1, 10000, &value), FL_ERR_INVALID);
	fl_config_destroy(config);
}

static enum fl_status parse_skew(const char *value, struct fl_config **ret_config)
{
	static const struct fl_config_option skew_options[] = {
	    {"max-skew", NULL, "5m", "a duration", false},
	    {"data-dir", NULL, NULL, "not set", false},
	};
	char *argv[] = {"svc", "--max-skew", (char *)value, NULL};
	return fl_config_parse(skew_options, 2, value ? 3 : 1, argv, NULL, 0, ret_config);
}

Test(config, durations_are_parsed_and_checked_against_their_range)
{
	struct fl_config *config;
	int64_t us = 0;

	clear_env();
	cr_assert_eq(parse_skew(NULL, &config), FL_OK);
	cr_assert_eq(fl_config_get_duration(config, "max-skew", 1, INT64_MAX, &us), FL_OK);
	cr_assert_eq(us, INT64_C(300) * 1000000);
	cr_assert_eq(fl_config_get_duration(config, "max-skew", 1, 60000000, &us), FL_ERR_INVALID);
	cr_assert_eq(fl_config_get_duration(config, "data-dir", 1, 10, &us), FL_ERR_NOT_FOUND);
	fl_config_destroy(config);

	const char *good[][2] = {{"30s", "30"}, {"2h", "7200"}, {"1d", "86400"}};
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(parse_skew(good[i][0], &config), FL_OK);
		cr_assert_eq(fl_config_get_duration(config, "max-skew", 1, INT64_MAX, &us), FL_OK);
		cr_assert_eq(us, atoll(good[i][1]) * 1000000, "%s", good[i][0]);
		fl_config_destroy(config);
	}
	const char *bad[] = {"5", "5x", "m", "0s", "-1m", "1.5h", "5m ", ""};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(parse_skew(bad[i], &config), FL_OK);
		cr_assert_eq(fl_config_get_duration(config, "max-skew", 1, INT64_MAX, &us),
			     FL_ERR_INVALID, "%s", bad[i]);
		fl_config_destroy(config);
	}
}

/*
 * fl_config_destroy(NULL) is a no-op: run it in a child process (under the sanitizers in
 * the ASan build) and assert that the child survives it and goes on.
 */
Test(config, destroy_accepts_null)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		fl_config_destroy(NULL);
		_exit(42); /* reached only when the call returned */
	}
	int status = 0;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "the child died of signal %d", WTERMSIG(status));
	cr_assert_eq(WEXITSTATUS(status), 42, "the child exited %d", WEXITSTATUS(status));
}

Test(config, repeatable_flag_lists_every_value_and_splits_the_environment)
{
	struct fl_config *config;
	char **values;
	size_t count;

	clear_env();
	/* Every occurrence, in order, each split at the separators. */
	cr_assert_eq(parse(NULL, 0, &config, "prog", "--data-dir", "a.pem",
			   "--data-dir=b.pem,c.pem", "--data-dir", "d.pem", NULL),
		     FL_OK);
	cr_assert_str_eq(fl_config_get(config, "data-dir"), "d.pem"); /* the last one */
	cr_assert_eq(fl_config_get_list(config, "data-dir", ",:", &values, &count), FL_OK);
	cr_assert_eq(count, 4);
	cr_assert_str_eq(values[0], "a.pem");
	cr_assert_str_eq(values[1], "b.pem");
	cr_assert_str_eq(values[2], "c.pem");
	cr_assert_str_eq(values[3], "d.pem");
	cr_assert_null(values[4]);
	fl_config_list_free(values);
	cr_assert_eq(fl_config_get_list(config, "no-such-flag", ",", &values, &count),
		     FL_ERR_INVALID);
	fl_config_destroy(config);

	/* Not on the command line: the environment, split at , and :, empty pieces skipped. */
	setenv("FLEDGER_DATA_DIR", "x.pem:y.pem,,z.pem:", 1);
	cr_assert_eq(parse(NULL, 0, &config, "prog", NULL), FL_OK);
	cr_assert_eq(fl_config_get_list(config, "data-dir", ",:", &values, &count), FL_OK);
	cr_assert_eq(count, 3);
	cr_assert_str_eq(values[0], "x.pem");
	cr_assert_str_eq(values[2], "z.pem");
	fl_config_list_free(values);
	fl_config_destroy(config);

	/* The command line replaces the environment entirely. */
	cr_assert_eq(parse(NULL, 0, &config, "prog", "--data-dir", "w.pem", NULL), FL_OK);
	cr_assert_eq(fl_config_get_list(config, "data-dir", ",:", &values, &count), FL_OK);
	cr_assert_eq(count, 1);
	cr_assert_str_eq(values[0], "w.pem");
	fl_config_list_free(values);
	fl_config_destroy(config);
	clear_env();

	/* Unset: an empty list. */
	cr_assert_eq(parse(NULL, 0, &config, "prog", NULL), FL_OK);
	cr_assert_eq(fl_config_get_list(config, "data-dir", ",:", &values, &count), FL_OK);
	cr_assert_eq(count, 0);
	cr_assert_null(values[0]);
	fl_config_list_free(values);
	fl_config_destroy(config);
}
