/*
 * For the harnesses of query-svc's read parsers (read_plan.h): a view
 * registry holding the example views, and two principals: "ranker"
 * (reader, inference: sees the user_activity features but cart_items,
 * which is for role:fraud) and the insecure mode's admin. Plans are parsed
 * without a request: no query parameters are given.
 */
#include <stdlib.h>
#include <string.h>

#include "fledger/auth.h"
#include "fledger/svc.h"
#include "fuzz.h"
#include "read_plan.h"

static struct fl_view_registry *read_views;
static struct fl_auth *read_auth;
static const struct fl_principal *principals[2];

static void read_teardown(void)
{
	fl_view_registry_destroy(read_views);
	fl_auth_destroy(read_auth);
}

static void read_setup(void)
{
	static const char tokens[] =
	    "{\"principals\": [{\"name\": \"ranker\", \"roles\": [\"reader\", \"inference\"], "
	    "\"token_sha256\": "
	    "\"ba5005a40cf5212e4ac0190104cc127edab013294bb71279a975b27a80982d45\"}]}";
	char error[256];
	read_views = fuzz_example_registry();
	FUZZ_CHECK(fl_auth_parse(tokens, strlen(tokens), error, sizeof(error), &read_auth) ==
		   FL_OK);
	FUZZ_CHECK(fl_auth_lookup(read_auth, "Bearer reader-token", &principals[0]) == FL_OK);
	principals[1] = fl_svc_dev_principal();
	atexit(read_teardown);
}

static void read_plan(struct fl_read_plan *plan, enum fl_read_kind kind,
		      const struct fl_principal *principal)
{
	fl_read_plan_init(plan, kind, principal, read_views);
}

/* What a parsed read holds: views the principal may read, and at most what they have. */
static void check_parsed(const struct fl_read_plan *plan)
{
	FUZZ_CHECK(plan->n_parts >= 1 && plan->n_entities >= 1);
	for (size_t i = 0; i < plan->n_entities; i++)
		FUZZ_CHECK(fl_entity_id_check_read(plan->entity_ids[i],
						   strlen(plan->entity_ids[i])) == FL_ENTITY_ID_OK);
	for (size_t i = 0; i < plan->n_parts; i++) {
		const struct fl_read_part *part = &plan->parts[i];
		FUZZ_CHECK(part->n_features <= fl_view_feature_count(part->view));
		FUZZ_CHECK(part->n_windows <= fl_view_window_count(part->view));
		for (size_t k = 0; k < part->n_features; k++)
			FUZZ_CHECK(fl_read_feature_readable(plan->principal, part->features[k]));
		for (size_t k = 0; k < part->n_windows; k++)
			FUZZ_CHECK(
			    fl_read_window_readable(plan->principal, part->view, part->windows[k]));
	}
}
