#include "fledger/auth.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "fledger/sha256.h"
#include "fledger/util.h"

#define HASH_LEN 32

struct fl_principal {
	char *name;
	char **roles;
	size_t n_roles;
	uint8_t token_hash[HASH_LEN];
};

struct fl_auth {
	struct fl_principal *principals;
	size_t n_principals;
};

static void principal_finish(struct fl_principal *principal)
{
	for (size_t i = 0; i < principal->n_roles; i++)
		free(principal->roles[i]);
	free(principal->roles);
	free(principal->name);
}

void fl_auth_destroy(struct fl_auth *auth)
{
	if (auth == NULL)
		return;
	for (size_t i = 0; i < auth->n_principals; i++)
		principal_finish(&auth->principals[i]);
	free(auth->principals);
	free(auth);
}

/*
 * Fills principal from the JSON object at principals[index], checking it
 * against the ones already read (auth->principals[0..index-1]).
 */
static enum fl_status read_principal(const struct fl_auth *auth, size_t index, const json_t *object,
				     struct fl_principal *principal, char *error, size_t error_size)
{
	const char *key;
	const json_t *value, *name, *roles, *hash;

	if (!json_is_object(object)) {
		fl_set_error(error, error_size, "principals[%zu] is not an object", index);
		return FL_ERR_INVALID;
	}
	json_object_foreach((json_t *)object, key, value)
	{
		if (strcmp(key, "name") != 0 && strcmp(key, "roles") != 0 &&
		    strcmp(key, "token_sha256") != 0) {
			fl_set_error(error, error_size,
				     "principals[%zu] has an unknown member \"%s\" (allowed: name, "
				     "roles, token_sha256)",
				     index, key);
			return FL_ERR_INVALID;
		}
	}

	name = json_object_get(object, "name");
	if (!json_is_string(name) || json_string_length(name) == 0 ||
	    strlen(json_string_value(name)) != json_string_length(name)) {
		fl_set_error(error, error_size, "principals[%zu].name must be a non-empty string",
			     index);
		return FL_ERR_INVALID;
	}
	for (size_t i = 0; i < index; i++) {
		if (strcmp(auth->principals[i].name, json_string_value(name)) == 0) {
			fl_set_error(error, error_size,
				     "principals[%zu].name \"%s\" is a duplicate", index,
				     json_string_value(name));
			return FL_ERR_INVALID;
		}
	}

	hash = json_object_get(object, "token_sha256");
	if (!json_is_string(hash) || json_string_length(hash) != 2 * HASH_LEN ||
	    fl_hex_decode(json_string_value(hash), principal->token_hash, HASH_LEN) != FL_OK) {
		fl_set_error(error, error_size,
			     "principals[%zu].token_sha256 must be 64 hex digits (sha256sum of "
			     "the token)",
			     index);
		return FL_ERR_INVALID;
	}
	for (size_t i = 0; i < index; i++) {
		if (memcmp(auth->principals[i].token_hash, principal->token_hash, HASH_LEN) == 0) {
			fl_set_error(error, error_size,
				     "principals[%zu] has the same token as principals[%zu]", index,
				     i);
			return FL_ERR_INVALID;
		}
	}

	roles = json_object_get(object, "roles");
	if (!json_is_array(roles)) {
		fl_set_error(error, error_size, "principals[%zu].roles must be an array of strings",
			     index);
		return FL_ERR_INVALID;
	}
	for (size_t i = 0; i < json_array_size(roles); i++) {
		const json_t *role = json_array_get(roles, i);
		if (!json_is_string(role) || json_string_length(role) == 0 ||
		    strlen(json_string_value(role)) != json_string_length(role)) {
			fl_set_error(error, error_size,
				     "principals[%zu].roles[%zu] must be a non-empty string", index,
				     i);
			return FL_ERR_INVALID;
		}
	}

	principal->name = strdup(json_string_value(name));
	principal->roles = calloc(json_array_size(roles) + 1, sizeof(principal->roles[0]));
	if (principal->name == NULL || principal->roles == NULL)
		goto fail_nomem;
	for (size_t i = 0; i < json_array_size(roles); i++) {
		principal->roles[i] = strdup(json_string_value(json_array_get(roles, i)));
		if (principal->roles[i] == NULL)
			goto fail_nomem;
		principal->n_roles++;
	}
	return FL_OK;

fail_nomem:
	fl_set_error(error, error_size, "out of memory");
	return FL_ERR_NOMEM;
}

enum fl_status fl_auth_parse(const char *text, size_t len, char *error, size_t error_size,
			     struct fl_auth **ret_auth)
{
	json_error_t json_error;
	json_t *root, *principals;
	struct fl_auth *auth = NULL;
	enum fl_status status;

	if (text == NULL || ret_auth == NULL) {
		fl_set_error(error, error_size, "invalid arguments");
		return FL_ERR_INVALID;
	}
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &json_error);
	if (root == NULL) {
		fl_set_error(error, error_size, "not valid JSON: %s (line %d, column %d)",
			     json_error.text, json_error.line, json_error.column);
		return FL_ERR_INVALID;
	}
	principals = json_object_get(root, "principals");
	if (!json_is_object(root) || !json_is_array(principals)) {
		fl_set_error(error, error_size, "expected an object with a \"principals\" array");
		status = FL_ERR_INVALID;
		goto out;
	}

	auth = calloc(1, sizeof(*auth));
	if (auth == NULL)
		goto out_nomem;
	auth->principals = calloc(json_array_size(principals) + 1, sizeof(auth->principals[0]));
	if (auth->principals == NULL)
		goto out_nomem;
	for (size_t i = 0; i < json_array_size(principals); i++) {
		/* Counted before reading, so a half-read principal is freed. */
		auth->n_principals = i + 1;
		status = read_principal(auth, i, json_array_get(principals, i),
					&auth->principals[i], error, error_size);
		if (status != FL_OK)
			goto out;
	}
	*ret_auth = auth;
	auth = NULL;
	status = FL_OK;
	goto out;

out_nomem:
	fl_set_error(error, error_size, "out of memory");
	status = FL_ERR_NOMEM;
out:
	fl_auth_destroy(auth);
	json_decref(root);
	return status;
}

enum fl_status fl_auth_load(const char *path, char *error, size_t error_size,
			    struct fl_auth **ret_auth)
{
	char *text;
	size_t len;
	enum fl_status status;

	if (path == NULL || ret_auth == NULL) {
		fl_set_error(error, error_size, "invalid arguments");
		return FL_ERR_INVALID;
	}
	status = fl_file_read(path, &text, &len);
	if (status != FL_OK) {
		fl_set_error(error, error_size, "cannot read tokens file %s", path);
		return status == FL_ERR_NOMEM ? FL_ERR_NOMEM : FL_ERR_IO;
	}
	status = fl_auth_parse(text, len, error, error_size, ret_auth);
	free(text);
	return status;
}

static bool sha256(const void *bytes, size_t len, uint8_t out[HASH_LEN])
{
	return fl_sha256(bytes, len, out);
}

enum fl_status fl_auth_lookup(const struct fl_auth *auth, const char *authorization,
			      const struct fl_principal **ret_principal)
{
	static const char scheme[] = "Bearer";
	const struct fl_principal *found = NULL;
	uint8_t hash[HASH_LEN];
	const char *token;
	size_t token_len;

	if (auth == NULL || ret_principal == NULL)
		return FL_ERR_INVALID;
	if (authorization == NULL || strncasecmp(authorization, scheme, sizeof(scheme) - 1) != 0 ||
	    authorization[sizeof(scheme) - 1] != ' ')
		return FL_ERR_INVALID;
	token = authorization + sizeof(scheme) - 1;
	while (*token == ' ')
		token++;
	token_len = strlen(token);
	while (token_len > 0 && (token[token_len - 1] == ' ' || token[token_len - 1] == '\t'))
		token_len--;
	if (token_len == 0)
		return FL_ERR_INVALID;
	for (size_t i = 0; i < token_len; i++) {
		unsigned char c = (unsigned char)token[i];
		if (c <= ' ' || c == 0x7f)
			return FL_ERR_INVALID;
	}

	if (!sha256(token, token_len, hash))
		return FL_ERR_DENIED;
	/* Every hash is compared, in constant time, whatever matched. */
	for (size_t i = 0; i < auth->n_principals; i++) {
		if (CRYPTO_memcmp(hash, auth->principals[i].token_hash, HASH_LEN) == 0)
			found = &auth->principals[i];
	}
	if (found == NULL)
		return FL_ERR_DENIED;
	*ret_principal = found;
	return FL_OK;
}

size_t fl_auth_count(const struct fl_auth *auth)
{
	return auth != NULL ? auth->n_principals : 0;
}

const char *fl_principal_name(const struct fl_principal *principal)
{
	return principal != NULL ? principal->name : NULL;
}

size_t fl_principal_role_count(const struct fl_principal *principal)
{
	return principal != NULL ? principal->n_roles : 0;
}

const char *fl_principal_role(const struct fl_principal *principal, size_t index)
{
	if (principal == NULL || index >= principal->n_roles)
		return NULL;
	return principal->roles[index];
}

bool fl_principal_has_role(const struct fl_principal *principal, const char *role)
{
	if (principal == NULL || role == NULL)
		return false;
	for (size_t i = 0; i < principal->n_roles; i++) {
		if (strcmp(principal->roles[i], role) == 0)
			return true;
	}
	return false;
}

/* Whether one ACL entry (a principal name or "role:<role>") admits principal. */
static bool entry_matches(const struct fl_principal *principal, const char *entry)
{
	static const char role_prefix[] = "role:";

	if (entry == NULL)
		return false;
	if (strncmp(entry, role_prefix, sizeof(role_prefix) - 1) == 0)
		return fl_principal_has_role(principal, entry + sizeof(role_prefix) - 1);
	return strcmp(entry, principal->name) == 0;
}

bool fl_acl_allows(const struct fl_principal *principal, const char *const *entries,
		   size_t n_entries)
{
	if (principal == NULL || (entries == NULL && n_entries > 0))
		return false;
	if (fl_principal_has_role(principal, "admin"))
		return true;
	for (size_t i = 0; i < n_entries; i++) {
		if (entry_matches(principal, entries[i]))
			return true;
	}
	return false;
}

bool fl_acl_allows_json(const struct fl_principal *principal, const json_t *acl)
{
	if (principal == NULL)
		return false;
	if (fl_principal_has_role(principal, "admin"))
		return true;
	if (!json_is_array(acl))
		return false;
	for (size_t i = 0; i < json_array_size(acl); i++) {
		const json_t *entry = json_array_get(acl, i);
		if (json_is_string(entry) && entry_matches(principal, json_string_value(entry)))
			return true;
	}
	return false;
}

enum fl_status fl_auth_token_hash(const char *token, char ret_hex[FL_AUTH_HASH_HEX_LEN])
{
	uint8_t hash[HASH_LEN];

	if (token == NULL || token[0] == '\0' || ret_hex == NULL)
		return FL_ERR_INVALID;
	if (!sha256(token, strlen(token), hash))
		return FL_ERR_CRYPTO;
	fl_hex_encode(hash, HASH_LEN, ret_hex);
	return FL_OK;
}
