/*
 * Keys and tokens: `fledger keygen`, `fledger token` and `fledger keys
 * rotate`.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "bundle.h"
#include "cli.h"
#include "eventlog/signer.h"
#include "fledger/auth.h"
#include "fledger/util.h"

/* ---- keygen ------------------------------------------------------------------ */

static const struct fl_config_option keygen_options[] = {
    {"out", NULL, NULL, "where to write the private key (PEM, mode 0600)", false},
    {"force", NULL, NULL, "replace an existing file", true},
};

static int keygen(struct fl_cli *cli)
{
	const char *out = fl_config_get(cli->config, "out");
	struct fl_signer *signer;
	struct stat info;

	if (!out) {
		fl__cli_error("keygen needs --out FILE");
		return FL_CLI_USAGE;
	}
	if (!fl_config_get_bool(cli->config, "force") && stat(out, &info) == 0) {
		fl__cli_error("%s exists; a signing key is not overwritten without --force", out);
		return FL_CLI_FAIL;
	}
	enum fl_status st = fl_signer_generate(&signer);
	if (st != FL_OK) {
		fl__cli_error("cannot make a key: %s", fl_status_str(st));
		return FL_CLI_FAIL;
	}
	if ((st = fl_signer_save(signer, out)) != FL_OK) {
		fl__cli_error("cannot write the key to %s: %s", out, fl_status_str(st));
		fl_signer_destroy(signer);
		return FL_CLI_FAIL;
	}
	printf("key_id: %s\n%s", fl_signer_key_id(signer), fl_signer_public_pem(signer));
	fl_signer_destroy(signer);
	return FL_CLI_OK;
}

const struct fl_cli_command fl__cli_keygen_command = {
    .group = "keygen",
    .args_usage = "",
    .summary = "make a new Ed25519 signing key",
    .description = "Writes a new Ed25519 private key (PKCS#8 PEM, mode 0600) for command-svc\n"
		   "or query-svc (--signing-key), and prints its key id and public key.\n",
    .options = keygen_options,
    .n_options = sizeof(keygen_options) / sizeof(keygen_options[0]),
    .run = keygen,
    .offline = true,
};

/* ---- token --------------------------------------------------------------------- */

static const struct fl_config_option token_options[] = {
    {"name", NULL, NULL, "the principal's name", false},
    {"roles", NULL, NULL,
     "its roles, comma-separated (admin, producer, reader, auditor, "
     "replicator, or ACL groups)",
     false},
    {"out-token", NULL, NULL, "write the token to this file (mode 0600) instead of stdout", false},
};

static int token(struct fl_cli *cli)
{
	const char *name = fl_config_get(cli->config, "name");
	const char *roles = fl_config_get(cli->config, "roles");
	const char *out = fl_config_get(cli->config, "out-token");
	uint8_t secret[32];
	char token_hex[2 * sizeof(secret) + 2], hash[FL_AUTH_HASH_HEX_LEN];

	if (!name || !name[0] || !roles) {
		fl__cli_error("token needs --name NAME and --roles ROLE[,ROLE...]");
		return FL_CLI_USAGE;
	}
	json_t *role_list = json_array();
	char *copy = strdup(roles), *save = NULL;
	for (char *role = copy ? strtok_r(copy, ",", &save) : NULL; role;
	     role = strtok_r(NULL, ",", &save))
		json_array_append_new(role_list, json_string(role));
	free(copy);
	if (json_array_size(role_list) == 0) {
		fl__cli_error("--roles lists no role");
		json_decref(role_list);
		return FL_CLI_USAGE;
	}
	if (RAND_bytes(secret, sizeof(secret)) != 1) {
		fl__cli_error("no random bytes from OpenSSL");
		json_decref(role_list);
		return FL_CLI_FAIL;
	}
	fl_hex_encode(secret, sizeof(secret), token_hex);
	if (fl_auth_token_hash(token_hex, hash) != FL_OK) {
		fl__cli_error("cannot hash the token");
		json_decref(role_list);
		return FL_CLI_FAIL;
	}
	json_t *entry =
	    json_pack("{s:s,s:o,s:s}", "name", name, "roles", role_list, "token_sha256", hash);
	char *entry_text = entry ? json_dumps(entry, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(entry);
	if (!entry_text) {
		fl__cli_error("out of memory");
		return FL_CLI_FAIL;
	}
	int rc = FL_CLI_OK;
	if (out) {
		size_t len = strlen(token_hex);
		token_hex[len] = '\n';
		if (fl_bundle_write_file(out, token_hex, len + 1, 0600) != FL_OK) {
			fl__cli_error("cannot write %s: %s", out, strerror(errno));
			rc = FL_CLI_FAIL;
		} else {
			fprintf(stderr, "fledger: the token of %s is in %s\n", name, out);
		}
		token_hex[len] = '\0';
	} else {
		printf("%s\n", token_hex);
	}
	if (rc == FL_CLI_OK)
		printf("%s\n", entry_text);
	free(entry_text);
	explicit_bzero(token_hex, sizeof(token_hex));
	explicit_bzero(secret, sizeof(secret));
	return rc;
}

const struct fl_cli_command fl__cli_token_command = {
    .group = "token",
    .args_usage = "",
    .summary = "make a bearer token and its tokens-file entry",
    .description = "Makes a random 32-byte token (64 hex digits). Prints it (or writes it to\n"
		   "--out-token FILE, mode 0600), then the entry for the services' tokens file,\n"
		   "{\"name\":..,\"roles\":[..],\"token_sha256\":..}: the file holds the token's\n"
		   "hash, never the token.\n",
    .options = token_options,
    .n_options = sizeof(token_options) / sizeof(token_options[0]),
    .run = token,
    .offline = true,
};

/* ---- keys rotate ------------------------------------------------------------------ */

static const struct fl_config_option rotate_options[] = {
    {"key-file", NULL, NULL, "command-svc's --signing-key file", false},
    {"pid", NULL, NULL, "command-svc's process id (it gets SIGHUP)", false},
    {"no-wait", NULL, NULL, "do not wait for /v1/keys to list the new key", true},
};

/* Copies the file at from to to (mode 0600), replacing to. */
static enum fl_status copy_file(const char *from, const char *to)
{
	char *text;
	size_t len;
	enum fl_status st = fl_file_read(from, &text, &len);
	if (st != FL_OK)
		return st;
	st = fl_bundle_write_file(to, text, len, 0600);
	explicit_bzero(text, len);
	free(text);
	return st;
}

/* True once GET /v1/keys of command-svc lists key_id (within about 10 s). */
static bool key_listed(struct fl_cli *cli, const char *key_id)
{
	for (int attempt = 0; attempt < 100; attempt++) {
		json_t *doc = fl__cli_get_json(cli, cli->command_url, "/v1/keys", false, NULL);
		size_t index;
		json_t *key;
		bool found = false;
		json_array_foreach(json_object_get(doc, "keys"), index, key)
		{
			const char *id = json_string_value(json_object_get(key, "key_id"));
			found = found || (id && strcmp(id, key_id) == 0);
		}
		json_decref(doc);
		if (found)
			return true;
		if (!doc)
			return false;
		nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
	}
	return false;
}

static int rotate(struct fl_cli *cli)
{
	const char *path = fl_config_get(cli->config, "key-file");
	uint64_t pid;
	struct fl_signer *old_key, *new_key;
	char *old_path, *tmp_path;

	if (!path || !fl__cli_parse_u64(fl_config_get(cli->config, "pid"), 2, INT32_MAX, &pid)) {
		fl__cli_error("keys rotate needs --key-file FILE and --pid PID");
		return FL_CLI_USAGE;
	}
	enum fl_status st = fl_signer_load(path, &old_key);
	if (st != FL_OK) {
		fl__cli_error("cannot load the current key %s: %s", path, fl_status_str(st));
		return FL_CLI_FAIL;
	}
	if (kill((pid_t)pid, 0) != 0) {
		fl__cli_error("no process %llu to signal: %s", (unsigned long long)pid,
			      strerror(errno));
		fl_signer_destroy(old_key);
		return FL_CLI_FAIL;
	}
	size_t len = strlen(path) + 16;
	old_path = malloc(len);
	tmp_path = malloc(len);
	if (!old_path || !tmp_path || fl_signer_generate(&new_key) != FL_OK) {
		fl__cli_error("cannot make a new key");
		free(old_path);
		free(tmp_path);
		fl_signer_destroy(old_key);
		return FL_CLI_FAIL;
	}
	snprintf(old_path, len, "%s.old", path);
	snprintf(tmp_path, len, "%s.new", path);
	int rc = FL_CLI_FAIL;
	/* The old key stays in FILE.old; FILE is replaced in one rename. */
	if ((st = copy_file(path, old_path)) != FL_OK) {
		fl__cli_error("cannot keep the old key as %s: %s", old_path, fl_status_str(st));
		goto out;
	}
	if ((st = fl_signer_save(new_key, tmp_path)) != FL_OK || rename(tmp_path, path) != 0) {
		fl__cli_error("cannot write the new key to %s: %s", path,
			      st != FL_OK ? fl_status_str(st) : strerror(errno));
		unlink(tmp_path);
		goto out;
	}
	printf("old key_id: %s (kept in %s)\nnew key_id: %s\n", fl_signer_key_id(old_key), old_path,
	       fl_signer_key_id(new_key));
	fflush(stdout);
	if (kill((pid_t)pid, SIGHUP) != 0) {
		fl__cli_error("the new key is in %s, but SIGHUP to %llu failed: %s", path,
			      (unsigned long long)pid, strerror(errno));
		goto out;
	}
	if (fl_config_get_bool(cli->config, "no-wait")) {
		rc = FL_CLI_OK;
	} else if (key_listed(cli, fl_signer_key_id(new_key))) {
		fprintf(stderr, "fledger: %s now lists key %s\n", cli->command_url,
			fl_signer_key_id(new_key));
		rc = FL_CLI_OK;
	} else {
		fl__cli_error("%s/v1/keys does not list the new key %s: did command-svc reload "
			      "(see its log)?",
			      cli->command_url, fl_signer_key_id(new_key));
	}
out:
	fl_signer_destroy(new_key);
	fl_signer_destroy(old_key);
	free(old_path);
	free(tmp_path);
	return rc;
}

const struct fl_cli_command fl__cli_keys_rotate_command = {
    .group = "keys",
    .sub = "rotate",
    .args_usage = "",
    .summary = "replace command-svc's signing key (SIGHUP)",
    .description = "Writes a new key to --key-file (the old one is kept as FILE.old) and sends\n"
		   "SIGHUP to --pid: command-svc re-reads its key and appends a key event,\n"
		   "signed by the old key, so the change is in the log. Then waits until\n"
		   "GET /v1/keys on --command-url lists the new key.\n",
    .options = rotate_options,
    .n_options = sizeof(rotate_options) / sizeof(rotate_options[0]),
    .run = rotate,
};
