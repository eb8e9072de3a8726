/*
 * The member scanner of stored JSON (fl_json_next_member, fl_json_member):
 * query-svc reads log lines and stored bodies with it instead of a parser.
 * Whenever jansson reads the text (without NUL bytes) as an object with
 * unique keys, the scanner must give the same members in the same order
 * (keys compared when they hold no escape), each raw value reading as the
 * same JSON value. The scanner may accept more than jansson (it does not
 * check inside nested values), but must never read past len.
 */
#include "fuzz.h"

#include "fledger/jsonw.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy of exactly size bytes, so that ASan sees any read past it. */
	char *text = malloc(size ? size : 1);
	FUZZ_CHECK(text != NULL);
	memcpy(text, data, size);

	struct fl_json_member m;
	size_t pos = 0, n = 0;
	int more;
	while ((more = fl_json_next_member(text, size, &pos, &m)) == 1) {
		FUZZ_CHECK(m.key >= text && m.key + m.key_len <= text + size);
		FUZZ_CHECK(m.value >= text && m.value + m.value_len <= text + size);
		FUZZ_CHECK(m.value_len > 0);
		FUZZ_CHECK(pos <= size);
		n++;
	}
	FUZZ_CHECK(more == 0 || more == -1);

	/* jansson 2.14 skips NUL bytes between tokens ({"a":1\0} reads as
	 * {"a":1}); the scanner refuses them, which is the safer side. */
	json_t *root =
	    memchr(text, '\0', size) ? NULL : json_loadb(text, size, JSON_REJECT_DUPLICATES, NULL);
	if (json_is_object(root)) {
		const char *key;
		FUZZ_CHECK(more == 0 && n == json_object_size(root));
		pos = 0;
		void *iter = json_object_iter(root);
		while (fl_json_next_member(text, size, &pos, &m) == 1) {
			key = json_object_iter_key(iter);
			bool escaped = memchr(m.key, '\\', m.key_len) != NULL;
			FUZZ_CHECK(escaped || (m.key_len == strlen(key) &&
					       memcmp(m.key, key, m.key_len) == 0));
			json_t *scanned = json_loadb(m.value, m.value_len, JSON_DECODE_ANY, NULL);
			FUZZ_CHECK(scanned != NULL);
			FUZZ_CHECK(json_equal(scanned, json_object_iter_value(iter)));
			json_decref(scanned);
			if (!escaped) {
				const char *found;
				size_t found_len;
				char *name = strndup(m.key, m.key_len);
				FUZZ_CHECK(name != NULL);
				FUZZ_CHECK(fl_json_member(text, size, name, &found, &found_len));
				FUZZ_CHECK(found == m.value && found_len == m.value_len);
				free(name);
			}
			iter = json_object_iter_next(root, iter);
		}
		FUZZ_CHECK(iter == NULL);
	}
	json_decref(root);
	free(text);
	return 0;
}
