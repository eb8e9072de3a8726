/*
 * Shared by the libFuzzer harnesses (docs/fuzzing.md): copies of the input
 * in the shapes the parsers take, the example views as a registry, and
 * FUZZ_CHECK, which turns a broken invariant into a finding.
 *
 * Every harness keeps its global state (registries, principals) in statics
 * made once in LLVMFuzzerInitialize and frees everything it makes per input,
 * so that LeakSanitizer reports only the parsers' leaks.
 */
#ifndef FLEDGER_FUZZ_H
#define FLEDGER_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fledger/error.h"
#include "fledger/util.h"
#include "fledger/view.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of a parser's answer; a failure aborts (a libFuzzer crash). */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,       \
				#cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* A malloc'd NUL-terminated copy of the input (the input may hold NULs). */
static inline char *fuzz_text(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	FUZZ_CHECK(text != NULL);
	if (size)
		memcpy(text, data, size);
	text[size] = '\0';
	return text;
}

/* The input as a request body: a JSON object, as fl_svc_json_body reads one. */
static inline json_t *fuzz_json_object(const uint8_t *data, size_t size)
{
	json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (root && !json_is_object(root)) {
		json_decref(root);
		return NULL;
	}
	return root;
}

/* A valid error: a 4xx status, a code and a NUL-terminated field and message. */
static inline void fuzz_check_error(const struct fl_error *err)
{
	FUZZ_CHECK(err->http_status >= 400 && err->http_status < 500);
	FUZZ_CHECK(err->code[0] != '\0');
	FUZZ_CHECK(memchr(err->code, '\0', sizeof(err->code)) != NULL);
	FUZZ_CHECK(memchr(err->field, '\0', sizeof(err->field)) != NULL);
	FUZZ_CHECK(memchr(err->message, '\0', sizeof(err->message)) != NULL);
}

/* 2026-11-26T21:00:00Z, the ingest time of every validated event. */
#define FUZZ_INGEST_US INT64_C(1795726800000000)
#define FUZZ_SKEW_US (INT64_C(5) * 60 * 1000000)

/* Parses one example view of schemas/views (FUZZ_VIEWS_DIR, set by meson). */
static inline struct fl_view *fuzz_example_view(const char *file)
{
	char path[4096], *text;
	size_t len;
	struct fl_view *view;
	struct fl_error err;
	snprintf(path, sizeof(path), "%s/%s", FUZZ_VIEWS_DIR, file);
	FUZZ_CHECK(fl_file_read(path, &text, &len) == FL_OK);
	json_t *definition = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	FUZZ_CHECK(definition != NULL);
	FUZZ_CHECK(fl_view_parse(definition, &view, &err) == FL_OK);
	json_decref(definition);
	free(text);
	return view;
}

/* The example views (user_activity, transactions, item_stats), version 1. */
static inline void fuzz_add_example_views(struct fl_view_registry *registry)
{
	static const char *const files[] = {"user_activity.json", "transactions.json",
					    "item_stats.json"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		struct fl_view *view = fuzz_example_view(files[i]);
		FUZZ_CHECK(fl_view_registry_put(registry, view, 1) == FL_OK);
		fl_view_unref(view);
	}
}

static inline struct fl_view_registry *fuzz_example_registry(void)
{
	struct fl_view_registry *registry;
	FUZZ_CHECK(fl_view_registry_create(&registry) == FL_OK);
	fuzz_add_example_views(registry);
	return registry;
}

#endif
