/*
 * For the harnesses of query-svc's read parsers: routes.c itself (included
 * for its static parsers; nothing in it changes for the fuzzers), a
 * projection in a temporary directory whose registry holds the example
 * views, and two principals: "ranker" (reader, inference: sees the
 * user_activity features but cart_items, which is for role:fraud) and the
 * insecure mode's admin. A job is made without a request: the query
 * parameters of a NULL request are all absent.
 */
#include "../../query-svc/routes.c"

#include <ftw.h>

#include "fuzz.h"

static struct fl_query query;
static struct fl_query_state query_state;
static char projection_dir[] = "/tmp/fledger-fuzz-XXXXXX";
static struct fl_auth *read_auth;
static const struct fl_principal *principals[2];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void read_teardown(void)
{
	fl_projection_close(query.projection);
	nftw(projection_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	fl_auth_destroy(read_auth);
}

static void read_setup(void)
{
	static const char tokens[] =
	    "{\"principals\": [{\"name\": \"ranker\", \"roles\": [\"reader\", \"inference\"], "
	    "\"token_sha256\": "
	    "\"ba5005a40cf5212e4ac0190104cc127edab013294bb71279a975b27a80982d45\"}]}";
	char error[256];
	FUZZ_CHECK(mkdtemp(projection_dir) != NULL);
	FUZZ_CHECK(fl_projection_open(projection_dir, &query.projection) == FL_OK);
	fuzz_add_example_views(fl_projection_views(query.projection));
	query.state = &query_state;
	FUZZ_CHECK(fl_auth_parse(tokens, strlen(tokens), error, sizeof(error), &read_auth) ==
		   FL_OK);
	FUZZ_CHECK(fl_auth_lookup(read_auth, "Bearer reader-token", &principals[0]) == FL_OK);
	principals[1] = fl_svc_dev_principal();
	atexit(read_teardown);
}

static struct read_job *read_job(const char *route, enum read_kind kind,
				 const struct fl_principal *principal)
{
	struct read_job *job = job_create(&query, NULL, route, kind);
	FUZZ_CHECK(job != NULL);
	job->principal = principal;
	return job;
}

/* What a parsed read holds: views the principal may read, and at most what they have. */
static void check_parsed(const struct read_job *job)
{
	FUZZ_CHECK(job->n_parts >= 1 && job->n_entities >= 1);
	for (size_t i = 0; i < job->n_entities; i++)
		FUZZ_CHECK(
		    entity_id_ok(job->entity_ids[i], strlen(job->entity_ids[i]), NULL, NULL));
	for (size_t i = 0; i < job->n_parts; i++) {
		const struct read_part *part = &job->parts[i];
		FUZZ_CHECK(part->n_features <= fl_view_feature_count(part->view));
		FUZZ_CHECK(part->n_windows <= fl_view_window_count(part->view));
		for (size_t k = 0; k < part->n_features; k++)
			FUZZ_CHECK(feature_readable(job->principal, part->features[k]));
		for (size_t k = 0; k < part->n_windows; k++)
			FUZZ_CHECK(window_readable(job->principal, part->view, part->windows[k]));
	}
}
