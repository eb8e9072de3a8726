/*
 * The tokens file (fl_auth_parse) and the Authorization header lookup.
 * The input is a tokens file; its last line, when it starts with "Bearer",
 * is also looked up as a header in the example set and in the parsed one.
 */
#include "fuzz.h"

#include "fledger/auth.h"

static struct fl_auth *example;

/* SHA-256 of "reader-token" and "admin-token". */
static const char example_tokens[] =
    "{\"principals\": ["
    "{\"name\": \"ranker\", \"roles\": [\"reader\"], \"token_sha256\": "
    "\"ba5005a40cf5212e4ac0190104cc127edab013294bb71279a975b27a80982d45\"},"
    "{\"name\": \"admin\", \"roles\": [\"admin\"], \"token_sha256\": "
    "\"10a4c7c9fc5206d6f36dc6944a81bb6f4a3cb0e25014ae3b12e6c3e52712292a\"}]}";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char error[256];
	FUZZ_CHECK(fl_auth_parse(example_tokens, strlen(example_tokens), error, sizeof(error),
				 &example) == FL_OK);
	return 0;
}

static void lookup(const struct fl_auth *auth, const char *header)
{
	const struct fl_principal *principal = NULL;
	enum fl_status st = fl_auth_lookup(auth, header, &principal);
	if (st == FL_OK) {
		FUZZ_CHECK(principal != NULL && fl_principal_name(principal)[0] != '\0');
		for (size_t i = 0; i < fl_principal_role_count(principal); i++)
			FUZZ_CHECK(fl_principal_role(principal, i) != NULL);
		FUZZ_CHECK(fl_principal_role(principal, fl_principal_role_count(principal)) ==
			   NULL);
	} else {
		FUZZ_CHECK(st == FL_ERR_INVALID || st == FL_ERR_DENIED);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_text(data, size), error[256];
	struct fl_auth *auth = NULL;
	const char *last = strrchr(text, '\n');
	last = last ? last + 1 : text;

	error[0] = '\0';
	enum fl_status st = fl_auth_parse((const char *)data, size, error, sizeof(error), &auth);
	if (st == FL_OK) {
		if (strncmp(last, "Bearer", 6) == 0)
			lookup(auth, last);
		fl_auth_destroy(auth);
	} else {
		FUZZ_CHECK(st == FL_ERR_INVALID || st == FL_ERR_NOMEM);
		FUZZ_CHECK(memchr(error, '\0', sizeof(error)) != NULL);
	}
	lookup(example, last);
	free(text);
	return 0;
}
