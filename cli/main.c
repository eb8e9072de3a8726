/*
 * fledger: the command-line tool of CONTRACT §11. main finds the command
 * words among the arguments (global flags may come before or after them),
 * parses the global flags and the command's own with fl_config, and runs
 * the command. Exit codes: 0 done, 1 failed (or verification failed),
 * 2 usage.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include <lmdb.h>

#include "fledger/httpc.h"
#include "fledger/version.h"

static const struct fl_config_option global_options[] = {
    {"command-url", "FLEDGER_COMMAND_URL", "http://127.0.0.1:8080", "command-svc base URL", false},
    {"query-url", "FLEDGER_QUERY_URL", "http://127.0.0.1:8081", "query-svc base URL", false},
    {"ca-file", "FLEDGER_CA_FILE", NULL,
     "PEM CA that signed the services' certificates (https:// URLs; default: the system's)", false},
    {"client-cert", "FLEDGER_CLIENT_CERT", NULL,
     "PEM client certificate for services that require one (mutual TLS; with --client-key)", false},
    {"client-key", "FLEDGER_CLIENT_KEY", NULL, "PEM private key of --client-cert", false},
    {"token-file", "FLEDGER_TOKEN_FILE", NULL,
     "file holding the bearer token (else the token itself in $FLEDGER_TOKEN)", false},
    {"timeout-ms", "FLEDGER_TIMEOUT_MS", "30000", "bound on each HTTP request", false},
};
#define N_GLOBAL (sizeof(global_options) / sizeof(global_options[0]))

static const struct fl_cli_command *const commands[] = {
    &fl__cli_keygen_command,	  &fl__cli_token_command,	 &fl__cli_keys_rotate_command,
    &fl__cli_views_apply_command, &fl__cli_write_command,	 &fl__cli_read_command,
    &fl__cli_log_verify_command,  &fl__cli_audit_export_command, &fl__cli_audit_verify_command,
    &fl__cli_demo_command,	  &fl__cli_historical_command,	 &fl__cli_receipt_verify_command,
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void print_commands(FILE *out, const char *group)
{
	for (size_t i = 0; i < N_COMMANDS; i++) {
		const struct fl_cli_command *c = commands[i];
		char name[64];
		if (group && strcmp(c->group, group) != 0)
			continue;
		snprintf(name, sizeof(name), "%s%s%s %s", c->group, c->sub ? " " : "",
			 c->sub ? c->sub : "", c->args_usage);
		fprintf(out, "  %-34s %s\n", name, c->summary);
	}
}

static void print_usage(FILE *out)
{
	fprintf(out, "Usage: fledger [global options] COMMAND [options] [arguments]\n"
		     "\n"
		     "The command-line tool of fledger, the feature store: views, writes, reads,\n"
		     "the verification of the signed logs and the audit bundle.\n"
		     "\n"
		     "Commands:\n");
	print_commands(out, NULL);
	fprintf(out, "\nConnection options (every command that reaches a service):\n");
	for (size_t i = 0; i < N_GLOBAL; i++) {
		char flag[64];
		snprintf(flag, sizeof(flag), "--%s%s", global_options[i].flag,
			 global_options[i].is_bool ? "" : " VALUE");
		fprintf(out, "  %-20s %s [env %s]%s%s%s\n", flag, global_options[i].help,
			global_options[i].env, global_options[i].default_value ? " (default: " : "",
			global_options[i].default_value ? global_options[i].default_value : "",
			global_options[i].default_value ? ")" : "");
	}
	fprintf(out, "  %-20s %s\n", "--version",
		"print the version and the libraries' versions, then exit");
	fprintf(out, "\n`fledger COMMAND --help` describes a command. Exit codes: 0 done, 1 failed "
		     "or not verified, 2 usage.\n");
}

/* True when --name (without '=') takes a separate value in any table. */
static bool takes_value(const char *arg)
{
	const char *name = arg + 2;
	if (strncmp(arg, "--", 2) != 0 || strchr(name, '='))
		return false;
	for (size_t i = 0; i < N_GLOBAL; i++)
		if (strcmp(global_options[i].flag, name) == 0)
			return !global_options[i].is_bool;
	for (size_t c = 0; c < N_COMMANDS; c++)
		for (size_t i = 0; i < commands[c]->n_options; i++)
			if (strcmp(commands[c]->options[i].flag, name) == 0)
				return !commands[c]->options[i].is_bool;
	return false;
}

/* Finds the index in argv of the next positional argument after from, or argc. */
static int next_word(int argc, char **argv, int from)
{
	for (int i = from + 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return i + 1 < argc ? i + 1 : argc;
		if (argv[i][0] != '-' || strcmp(argv[i], "-") == 0)
			return i;
		if (takes_value(argv[i]) && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
			i++;
	}
	return argc;
}

static void print_command_help(const struct fl_cli_command *c)
{
	char program[64];
	snprintf(program, sizeof(program), "fledger %s%s%s", c->group, c->sub ? " " : "",
		 c->sub ? c->sub : "");
	printf("Usage: %s [options]%s%s\n\n%c%s.\n", program, c->args_usage[0] ? " " : "",
	       c->args_usage, toupper((unsigned char)c->summary[0]), c->summary + 1);
	if (c->description)
		printf("\n%s", c->description);
	char *usage = fl_config_usage(program, c->options, c->n_options);
	const char *list = usage ? strstr(usage, "Options:") : NULL;
	if (list)
		printf("\n%s", list);
	free(usage);
	if (c->offline)
		return;
	/* The options every command that reaches a service takes (no --help). */
	usage = fl_config_usage(program, global_options, N_GLOBAL);
	list = usage ? strstr(usage, "Options:\n") : NULL;
	const char *help = list ? strstr(list, "  --help") : NULL;
	if (help)
		printf("\nConnection options:\n%.*s", (int)(help - list - 9), list + 9);
	free(usage);
}

/* True when flag (or, with alias, that too) comes before any "--". */
static bool has_flag(int argc, char **argv, const char *flag, const char *alias)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return false;
		if (strcmp(argv[i], flag) == 0 || (alias && strcmp(argv[i], alias) == 0))
			return true;
	}
	return false;
}

static bool wants_help(int argc, char **argv)
{
	return has_flag(argc, argv, "--help", "-h");
}

static int run(const struct fl_cli_command *c, int argc, char **argv, int word1, int word2)
{
	size_t n_options = N_GLOBAL + c->n_options;
	struct fl_config_option *options = calloc(n_options, sizeof(*options));
	char **args = calloc((size_t)argc + 1, sizeof(*args));
	struct fl_config *config = NULL;
	struct fl_cli cli = {0};
	char error[256];
	int rc = FL_CLI_FAIL, n = 0;

	if (!options || !args) {
		fl__cli_error("out of memory");
		goto out;
	}
	memcpy(options, global_options, sizeof(global_options));
	if (c->n_options)
		memcpy(options + N_GLOBAL, c->options, c->n_options * sizeof(*options));
	/* The arguments without the command words. */
	for (int i = 0; i < argc; i++)
		if (i != word1 && i != word2)
			args[n++] = argv[i];
	if (fl_config_parse(options, n_options, n, args, error, sizeof(error), &config) != FL_OK) {
		fl__cli_error("%s (see fledger %s%s%s --help)", error, c->group, c->sub ? " " : "",
			      c->sub ? c->sub : "");
		rc = FL_CLI_USAGE;
		goto out;
	}
	if (fl_config_wants_help(config)) {
		print_command_help(c);
		rc = FL_CLI_OK;
		goto out;
	}
	size_t n_args = fl_config_positional_count(config);
	if (n_args < c->min_args || n_args > c->max_args) {
		fl__cli_error("fledger %s%s%s takes %s%s (see --help)", c->group, c->sub ? " " : "",
			      c->sub ? c->sub : "",
			      c->args_usage[0] ? "the arguments " : "no arguments", c->args_usage);
		rc = FL_CLI_USAGE;
		goto out;
	}
	const char **positional = calloc(n_args + 1, sizeof(*positional));
	if (!positional) {
		fl__cli_error("out of memory");
		goto out;
	}
	for (size_t i = 0; i < n_args; i++)
		positional[i] = fl_config_positional(config, i);
	uint64_t timeout;
	if (!fl__cli_parse_u64(fl_config_get(config, "timeout-ms"), 1, 3600000, &timeout)) {
		fl__cli_error("--timeout-ms must be a number of milliseconds (1 to 3600000)");
		free(positional);
		rc = FL_CLI_USAGE;
		goto out;
	}
	const char *client_cert = fl_config_get(config, "client-cert");
	const char *client_key = fl_config_get(config, "client-key");
	char why[300];
	if (!c->offline && !client_cert != !client_key) {
		fl__cli_error("--client-cert and --client-key go together: give both");
		free(positional);
		rc = FL_CLI_USAGE;
		goto out;
	}
	/* Offline commands reach no service: their client has no certificate to check. */
	struct fl_httpc_options http_options = {.ca_file = fl_config_get(config, "ca-file"),
						.cert_file = c->offline ? NULL : client_cert,
						.key_file = c->offline ? NULL : client_key};
	struct fl_httpc *http = NULL;
	enum fl_status http_st = fl_httpc_create(&http_options, why, sizeof(why), &http);
	if (http_st != FL_OK) {
		if (http_st == FL_ERR_INVALID)
			fl__cli_error("cannot use --client-cert/--client-key: %s", why);
		else
			fl__cli_error("%s", fl_status_str(http_st));
		free(positional);
		rc = FL_CLI_FAIL;
		goto out;
	}
	cli = (struct fl_cli){.config = config,
			      .args = positional,
			      .n_args = n_args,
			      .command_url = fl_config_get(config, "command-url"),
			      .query_url = fl_config_get(config, "query-url"),
			      .timeout_ms = (int)timeout,
			      .http = http};
	rc = c->run(&cli);
	fl_httpc_destroy(http);
	free(cli.token);
	free(positional);
out:
	fl_config_destroy(config);
	free(args);
	free(options);
	return rc;
}

int main(int argc, char **argv)
{
	int word1 = next_word(argc, argv, 0);
	if (word1 >= argc && has_flag(argc, argv, "--version", NULL)) {
		/* The CLI does not link libnats: no line for it. */
		fl_version_print(stdout, "fledger", mdb_version(NULL, NULL, NULL), NULL);
		return FL_CLI_OK;
	}
	if (word1 >= argc || strcmp(argv[word1], "help") == 0) {
		bool asked = word1 < argc || wants_help(argc, argv);
		print_usage(asked ? stdout : stderr);
		return asked ? FL_CLI_OK : FL_CLI_USAGE;
	}
	const char *group = argv[word1];
	bool known_group = false;
	for (size_t i = 0; i < N_COMMANDS; i++) {
		const struct fl_cli_command *c = commands[i];
		if (strcmp(c->group, group) != 0)
			continue;
		known_group = true;
		if (!c->sub)
			return run(c, argc, argv, word1, -1);
	}
	if (!known_group) {
		fl__cli_error("unknown command \"%s\" (see fledger --help)", group);
		return FL_CLI_USAGE;
	}
	int word2 = next_word(argc, argv, word1);
	for (size_t i = 0; word2 < argc && i < N_COMMANDS; i++)
		if (strcmp(commands[i]->group, group) == 0 &&
		    strcmp(commands[i]->sub, argv[word2]) == 0)
			return run(commands[i], argc, argv, word1, word2);
	bool asked = word2 >= argc && wants_help(argc, argv);
	if (!asked)
		fl__cli_error(word2 < argc ? "unknown command \"%s %s\"; the %s commands are:"
					   : "%s needs a subcommand%.0s; the %s commands are:",
			      group, word2 < argc ? argv[word2] : "", group);
	print_commands(asked ? stdout : stderr, group);
	return asked ? FL_CLI_OK : FL_CLI_USAGE;
}
