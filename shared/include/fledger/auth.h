#ifndef FLEDGER_AUTH_H
#define FLEDGER_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "fledger/status.h"

/*
 * Bearer tokens and access lists (CONTRACT §8, §11).
 *
 * The tokens file names each principal, its roles and the SHA-256 of its
 * token, never the token itself:
 *
 *   {"principals": [
 *     {"name": "ranker", "roles": ["reader", "inference"], "token_sha256": "<64 hex>"}
 *   ]}
 *
 * A loaded set is immutable and may be read from any number of threads.
 * Principals it hands out live as long as the set: a service that reloads
 * the file keeps the old set until no request uses its principals.
 */

#define FL_AUTH_HASH_HEX_LEN 65 /* 64 hex digits and a NUL */

struct fl_auth;
struct fl_principal;

/*
 * Reads and checks a tokens file. Names must be unique and non-empty,
 * token_sha256 64 hex digits and unique, roles an array of non-empty
 * strings; any other member is refused (a plain "token" member would be a
 * leaked secret). Errors: FL_ERR_IO when the file cannot be read,
 * FL_ERR_INVALID when it is malformed, with a message for a person written
 * into error (error_size bytes, may be 0); FL_ERR_NOMEM.
 */
enum fl_status fl_auth_load(const char *path, char *error, size_t error_size,
			    struct fl_auth **ret_auth);

/* As fl_auth_load, from the text of the file. */
enum fl_status fl_auth_parse(const char *text, size_t len, char *error, size_t error_size,
			     struct fl_auth **ret_auth);

void fl_auth_destroy(struct fl_auth *auth);

/*
 * Finds the principal of an Authorization header value ("Bearer <token>";
 * the scheme is case-insensitive). The token's hash is compared with every
 * known hash in constant time. Returns FL_ERR_INVALID when authorization is
 * NULL or not a bearer credential, FL_ERR_DENIED when the token is unknown;
 * both deserve a 401. On FL_OK *ret_principal belongs to auth.
 */
enum fl_status fl_auth_lookup(const struct fl_auth *auth, const char *authorization,
			      const struct fl_principal **ret_principal);

/* The number of principals in the set. */
size_t fl_auth_count(const struct fl_auth *auth);

const char *fl_principal_name(const struct fl_principal *principal);
size_t fl_principal_role_count(const struct fl_principal *principal);

/* The role at index, or NULL past the end. */
const char *fl_principal_role(const struct fl_principal *principal, size_t index);

/* True when principal is not NULL and holds role. */
bool fl_principal_has_role(const struct fl_principal *principal, const char *role);

/*
 * True when principal may pass an access list: it holds the role "admin", or
 * an entry names it, or an entry "role:<r>" names one of its roles. Entries
 * come as an array of strings, or as a JSON array (other members than
 * strings never match). A NULL principal or list allows nothing.
 */
bool fl_acl_allows(const struct fl_principal *principal, const char *const *entries,
		   size_t n_entries);
bool fl_acl_allows_json(const struct fl_principal *principal, const json_t *acl);

/*
 * Writes the lowercase hex SHA-256 of token, the form the tokens file
 * holds (for the CLI's `token` command). FL_ERR_INVALID for an empty token,
 * FL_ERR_CRYPTO when OpenSSL fails.
 */
enum fl_status fl_auth_token_hash(const char *token, char ret_hex[FL_AUTH_HASH_HEX_LEN]);

#endif
