/*
 * `fledger views apply <file|dir>`: registers view definitions (CONTRACT
 * §2) with command-svc, one POST /v1/views per file.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "fledger/util.h"

/* scandir filter: visible files named *.json. */
static int json_filter(const struct dirent *entry)
{
	size_t len = strlen(entry->d_name);
	return entry->d_name[0] != '.' && len > 5 && strcmp(entry->d_name + len - 5, ".json") == 0;
}

/* Posts one definition file; prints its outcome. false when it failed. */
static bool apply_file(struct fl_cli *cli, const char *path)
{
	char *text, *answer;
	size_t len, answer_len;
	unsigned status;
	json_error_t error;

	enum fl_status st = fl_file_read(path, &text, &len);
	if (st != FL_OK) {
		fl__cli_error("%s: cannot read: %s", path, fl_status_str(st));
		return false;
	}
	json_t *definition = json_loadb(text, len, 0, &error);
	const char *name = json_string_value(json_object_get(definition, "name"));
	if (!json_is_object(definition) || !name) {
		if (!definition)
			fl__cli_error("%s: error: not JSON (line %d: %s)", path, error.line,
				      error.text);
		else
			fl__cli_error("%s: error: not a view definition (no \"name\")", path);
		json_decref(definition);
		free(text);
		return false;
	}
	st = fl__cli_http(cli, "POST", cli->command_url, "/v1/views", true, "application/json",
			  text, len, &status, &answer, &answer_len);
	free(text);
	if (st != FL_OK) {
		json_decref(definition);
		return false;
	}
	json_t *doc = json_loadb(answer, answer_len, 0, NULL);
	json_int_t version = json_integer_value(json_object_get(doc, "version"));
	json_int_t seq = json_integer_value(json_object_get(doc, "seq"));
	bool ok = status == 200 || status == 201;
	if (status == 201)
		printf("%s: created v%" JSON_INTEGER_FORMAT " (seq %" JSON_INTEGER_FORMAT ")\n",
		       name, version, seq);
	else if (status == 200)
		printf("%s: unchanged (v%" JSON_INTEGER_FORMAT ")\n", name, version);
	else {
		char what[300];
		snprintf(what, sizeof(what), "%s: error", name);
		fl__cli_print_http_error(what, status, answer, answer_len);
	}
	fflush(stdout);
	json_decref(doc);
	json_decref(definition);
	free(answer);
	return ok;
}

static int views_apply(struct fl_cli *cli)
{
	const char *target = cli->args[0];
	struct stat info;
	int failed = 0, applied = 0;

	if (stat(target, &info) != 0) {
		fl__cli_error("%s: no such file or directory", target);
		return FL_CLI_FAIL;
	}
	if (!fl__cli_token(cli, true))
		return FL_CLI_FAIL;
	if (!S_ISDIR(info.st_mode))
		return apply_file(cli, target) ? FL_CLI_OK : FL_CLI_FAIL;

	struct dirent **entries;
	int n = scandir(target, &entries, json_filter, alphasort);
	if (n < 0) {
		fl__cli_error("%s: cannot list the directory", target);
		return FL_CLI_FAIL;
	}
	for (int i = 0; i < n; i++) {
		size_t len = strlen(target) + strlen(entries[i]->d_name) + 2;
		char *path = malloc(len);
		if (path) {
			snprintf(path, len, "%s/%s", target, entries[i]->d_name);
			if (apply_file(cli, path))
				applied++;
			else
				failed++;
		} else {
			failed++;
		}
		free(path);
		free(entries[i]);
	}
	free(entries);
	if (n == 0)
		fl__cli_error("%s holds no .json file", target);
	if (failed)
		fl__cli_error("%d of %d view definitions failed", failed, failed + applied);
	return failed || n == 0 ? FL_CLI_FAIL : FL_CLI_OK;
}

const struct fl_cli_command fl__cli_views_apply_command = {
    .group = "views",
    .sub = "apply",
    .args_usage = "FILE|DIR",
    .summary = "register view definitions (POST /v1/views)",
    .description = "Posts a view definition, or every *.json file of a directory in name order,\n"
		   "to command-svc (role admin). Prints per view \"created vN\", \"unchanged\" or\n"
		   "the error; exits 1 when any failed.\n",
    .min_args = 1,
    .max_args = 1,
    .run = views_apply,
};
