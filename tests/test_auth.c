#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fledger/auth.h"
#include "fledger/sha256.h"
#include "fledger/util.h"

static char dir[64];

static void make_dir(void)
{
	strcpy(dir, "/tmp/fledger-auth-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/tokens.json", dir);
	unlink(path);
	rmdir(dir);
}

TestSuite(auth, .init = make_dir, .fini = remove_dir);

static void write_tokens(const char *text, char *ret_path, size_t path_size)
{
	FILE *file;

	snprintf(ret_path, path_size, "%s/tokens.json", dir);
	file = fopen(ret_path, "w");
	cr_assert_not_null(file);
	fputs(text, file);
	fclose(file);
}

/* A tokens file with "clicks-pipeline" (producer) and "ranker" (reader, inference). */
static struct fl_auth *load_two(void)
{
	char hash_clicks[FL_AUTH_HASH_HEX_LEN], hash_ranker[FL_AUTH_HASH_HEX_LEN];
	char text[1024], path[128], error[256] = "";
	struct fl_auth *auth = NULL;

	cr_assert_eq(fl_auth_token_hash("clicks-secret", hash_clicks), FL_OK);
	cr_assert_eq(fl_auth_token_hash("ranker-secret", hash_ranker), FL_OK);
	snprintf(text, sizeof(text),
		 "{\"principals\": [\n"
		 "  {\"name\": \"clicks-pipeline\", \"roles\": [\"producer\"], \"token_sha256\": "
		 "\"%s\"},\n"
		 "  {\"name\": \"ranker\", \"roles\": [\"reader\", \"inference\"], "
		 "\"token_sha256\": \"%s\"}\n"
		 "]}\n",
		 hash_clicks, hash_ranker);
	write_tokens(text, path, sizeof(path));
	cr_assert_eq(fl_auth_load(path, error, sizeof(error), &auth), FL_OK, "%s", error);
	cr_assert_eq(fl_auth_count(auth), 2);
	return auth;
}

Test(auth, token_hash_is_hex_sha256)
{
	char hex[FL_AUTH_HASH_HEX_LEN];

	cr_assert_eq(fl_auth_token_hash("abc", hex), FL_OK);
	cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	cr_assert_eq(fl_auth_token_hash("", hex), FL_ERR_INVALID);
}

Test(auth, bearer_token_finds_its_principal)
{
	struct fl_auth *auth = load_two();
	const struct fl_principal *principal = NULL;

	cr_assert_eq(fl_auth_lookup(auth, "Bearer clicks-secret", &principal), FL_OK);
	cr_assert_str_eq(fl_principal_name(principal), "clicks-pipeline");
	cr_assert_eq(fl_principal_role_count(principal), 1);
	cr_assert_str_eq(fl_principal_role(principal, 0), "producer");
	cr_assert_null(fl_principal_role(principal, 1));

	/* The scheme is case-insensitive; extra spaces are tolerated. */
	cr_assert_eq(fl_auth_lookup(auth, "bearer   ranker-secret ", &principal), FL_OK);
	cr_assert_str_eq(fl_principal_name(principal), "ranker");
	fl_auth_destroy(auth);
}

Test(auth, unknown_token_and_bad_headers_are_told_apart)
{
	struct fl_auth *auth = load_two();
	const struct fl_principal *principal = NULL;

	cr_assert_eq(fl_auth_lookup(auth, "Bearer clicks-secreT", &principal), FL_ERR_DENIED);
	cr_assert_eq(fl_auth_lookup(auth, "Bearer ba7816bf", &principal), FL_ERR_DENIED);
	cr_assert_eq(fl_auth_lookup(auth, NULL, &principal), FL_ERR_INVALID);
	cr_assert_eq(fl_auth_lookup(auth, "", &principal), FL_ERR_INVALID);
	cr_assert_eq(fl_auth_lookup(auth, "clicks-secret", &principal), FL_ERR_INVALID);
	cr_assert_eq(fl_auth_lookup(auth, "Bearer", &principal), FL_ERR_INVALID);
	cr_assert_eq(fl_auth_lookup(auth, "Bearer ", &principal), FL_ERR_INVALID);
	cr_assert_eq(fl_auth_lookup(auth, "Bearerclicks-secret", &principal), FL_ERR_INVALID);
	cr_assert_eq(fl_auth_lookup(auth, "Basic Y2xpY2tzOnNlY3JldA==", &principal),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_auth_lookup(auth, "Bearer clicks secret", &principal), FL_ERR_INVALID);
	cr_assert_null(principal, "a failed lookup must not write the principal");
	fl_auth_destroy(auth);
}

Test(auth, roles_and_acls)
{
	struct fl_auth *auth = load_two();
	const struct fl_principal *clicks, *ranker;
	const char *const write_acl[] = {"clicks-pipeline"};
	const char *const read_acl[] = {"role:inference", "role:fraud"};
	const char *const fraud_only[] = {"role:fraud"};
	json_t *json_acl = json_pack("[s, i, s]", "someone", 3, "role:reader");

	cr_assert_eq(fl_auth_lookup(auth, "Bearer clicks-secret", &clicks), FL_OK);
	cr_assert_eq(fl_auth_lookup(auth, "Bearer ranker-secret", &ranker), FL_OK);

	cr_assert(fl_principal_has_role(clicks, "producer"));
	cr_assert_not(fl_principal_has_role(clicks, "reader"));
	cr_assert(fl_principal_has_role(ranker, "inference"));
	cr_assert_not(fl_principal_has_role(NULL, "inference"));

	cr_assert(fl_acl_allows(clicks, write_acl, 1));
	cr_assert_not(fl_acl_allows(ranker, write_acl, 1));
	cr_assert(fl_acl_allows(ranker, read_acl, 2));
	cr_assert_not(fl_acl_allows(clicks, read_acl, 2));
	cr_assert_not(fl_acl_allows(ranker, fraud_only, 1));
	cr_assert_not(fl_acl_allows(ranker, NULL, 0));
	cr_assert_not(fl_acl_allows(NULL, read_acl, 2));
	/* A role named like a principal is not that principal. */
	cr_assert_not(fl_acl_allows(clicks, (const char *const[]){"role:clicks-pipeline"}, 1));
	cr_assert_not(fl_acl_allows(ranker, (const char *const[]){"inference"}, 1));

	cr_assert(fl_acl_allows_json(ranker, json_acl));
	cr_assert_not(fl_acl_allows_json(clicks, json_acl));
	cr_assert_not(fl_acl_allows_json(ranker, NULL));
	json_decref(json_acl);
	fl_auth_destroy(auth);
}

Test(auth, admin_passes_every_acl)
{
	char hash[FL_AUTH_HASH_HEX_LEN], text[512], error[256] = "";
	struct fl_auth *auth;
	const struct fl_principal *admin;
	const char *const acl[] = {"someone-else"};

	cr_assert_eq(fl_auth_token_hash("root-token", hash), FL_OK);
	snprintf(
	    text, sizeof(text),
	    "{\"principals\":[{\"name\":\"ops\",\"roles\":[\"admin\"],\"token_sha256\":\"%s\"}]}",
	    hash);
	cr_assert_eq(fl_auth_parse(text, strlen(text), error, sizeof(error), &auth), FL_OK, "%s",
		     error);
	cr_assert_eq(fl_auth_lookup(auth, "Bearer root-token", &admin), FL_OK);
	cr_assert(fl_acl_allows(admin, acl, 1));
	cr_assert(fl_acl_allows(admin, NULL, 0));
	cr_assert(fl_acl_allows_json(admin, NULL));
	fl_auth_destroy(auth);
}

/* Parses text and expects FL_ERR_INVALID with a message containing needle. */
static void expect_invalid(const char *text, const char *needle)
{
	char error[256] = "";
	struct fl_auth *auth = NULL;

	cr_assert_eq(fl_auth_parse(text, strlen(text), error, sizeof(error), &auth), FL_ERR_INVALID,
		     "accepted: %s", text);
	cr_assert_null(auth);
	cr_assert(strstr(error, needle) != NULL, "message \"%s\" lacks \"%s\"", error, needle);
}

#define H64 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

Test(auth, malformed_files_are_refused_with_a_reason)
{
	expect_invalid("{\"principals\": [", "not valid JSON");
	expect_invalid("[]", "\"principals\" array");
	expect_invalid("{\"principals\": {}}", "\"principals\" array");
	expect_invalid("{\"principals\": [7]}", "principals[0] is not an object");
	expect_invalid("{\"principals\": [{\"roles\": [], \"token_sha256\": \"" H64 "\"}]}",
		       "principals[0].name");
	expect_invalid("{\"principals\": [{\"name\": \"a\", \"roles\": [], \"token_sha256\": "
		       "\"xyz\"}]}",
		       "principals[0].token_sha256");
	expect_invalid("{\"principals\": [{\"name\": \"a\", \"roles\": [], \"token_sha256\": \"" H64
		       "0\"}]}",
		       "64 hex digits");
	expect_invalid(
	    "{\"principals\": [{\"name\": \"a\", \"roles\": \"admin\", \"token_sha256\": "
	    "\"" H64 "\"}]}",
	    "principals[0].roles");
	expect_invalid("{\"principals\": [{\"name\": \"a\", \"roles\": [\"\"], \"token_sha256\": "
		       "\"" H64 "\"}]}",
		       "principals[0].roles[0]");
	expect_invalid("{\"principals\": [{\"name\": \"a\", \"roles\": [], \"token\": \"plain\", "
		       "\"token_sha256\": \"" H64 "\"}]}",
		       "unknown member \"token\"");
	expect_invalid("{\"principals\": ["
		       "{\"name\": \"a\", \"roles\": [], \"token_sha256\": \"" H64 "\"},"
		       "{\"name\": \"a\", \"roles\": [], \"token_sha256\": "
		       "\"0000000000000000000000000000000000000000000000000000000000000000\"}]}",
		       "principals[1].name \"a\" is a duplicate");
	expect_invalid("{\"principals\": ["
		       "{\"name\": \"a\", \"roles\": [], \"token_sha256\": \"" H64 "\"},"
		       "{\"name\": \"b\", \"roles\": [], \"token_sha256\": \"" H64 "\"}]}",
		       "same token");
}

Test(auth, uppercase_hex_is_accepted)
{
	static const char text[] =
	    "{\"principals\": [{\"name\": \"a\", \"roles\": [], "
	    "\"token_sha256\": "
	    "\"BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
	    "\"}]}";
	struct fl_auth *auth;
	const struct fl_principal *principal;

	cr_assert_eq(fl_auth_parse(text, strlen(text), NULL, 0, &auth), FL_OK);
	cr_assert_eq(fl_auth_lookup(auth, "Bearer abc", &principal), FL_OK);
	cr_assert_str_eq(fl_principal_name(principal), "a");
	fl_auth_destroy(auth);
}

Test(auth, missing_file_is_an_io_error)
{
	char path[128], error[256] = "";
	struct fl_auth *auth = NULL;

	snprintf(path, sizeof(path), "%s/absent.json", dir);
	cr_assert_eq(fl_auth_load(path, error, sizeof(error), &auth), FL_ERR_IO);
	cr_assert(strstr(error, "absent.json") != NULL, "%s", error);
	cr_assert_null(auth);
	fl_auth_destroy(NULL);
}

Test(sha256, known_vectors)
{
	/* FIPS 180-2 examples */
	static const char *const inputs[] = {"", "abc"};
	static const char *const hex[] = {
	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"};
	for (size_t i = 0; i < 2; i++) {
		uint8_t digest[32];
		char text[65];
		cr_assert(fl_sha256(inputs[i], strlen(inputs[i]), digest));
		fl_hex_encode(digest, sizeof(digest), text);
		cr_expect_str_eq(text, hex[i]);
	}
}
