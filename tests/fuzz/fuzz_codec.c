/*
 * The hex and base64 decoders (key ids, hashes, log bodies, signatures).
 * Both are canonical: text they accept encodes back to the same text (hex
 * in lowercase), and any bytes encode to text they accept.
 */
#include <ctype.h>

#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static void check_hex(const char *text, size_t text_len)
{
	size_t len = text_len / 2;
	uint8_t *bytes = malloc(len + 1);
	char *back = malloc(2 * len + 1);
	FUZZ_CHECK(bytes && back);
	if (fl_hex_decode(text, bytes, len) == FL_OK) {
		FUZZ_CHECK(text_len == 2 * len);
		fl_hex_encode(bytes, len, back);
		for (size_t i = 0; i < 2 * len; i++)
			FUZZ_CHECK(back[i] == tolower((unsigned char)text[i]));
	}
	free(bytes);
	free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_text(data, size);
	check_hex(text, strlen(text));

	uint8_t *bytes;
	size_t len;
	if (fl_base64_decode((const char *)data, size, &bytes, &len) == FL_OK) {
		FUZZ_CHECK(fl_base64_encoded_len(len) == size);
		char *back = malloc(size + 1);
		FUZZ_CHECK(back != NULL);
		fl_base64_encode(bytes, len, back);
		FUZZ_CHECK(memcmp(back, data, size) == 0 && back[size] == '\0');
		free(back);
		free(bytes);
	}

	size_t encoded_len = fl_base64_encoded_len(size);
	char *encoded = malloc(encoded_len + 1);
	FUZZ_CHECK(encoded != NULL);
	fl_base64_encode(data, size, encoded);
	FUZZ_CHECK(strlen(encoded) == encoded_len);
	FUZZ_CHECK(fl_base64_decode(encoded, encoded_len, &bytes, &len) == FL_OK);
	FUZZ_CHECK(len == size && (size == 0 || memcmp(bytes, data, size) == 0));
	free(bytes);
	free(encoded);

	char *hex = malloc(2 * size + 1);
	uint8_t *decoded = malloc(size + 1);
	FUZZ_CHECK(hex && decoded);
	fl_hex_encode(data, size, hex);
	FUZZ_CHECK(fl_hex_decode(hex, decoded, size) == FL_OK);
	FUZZ_CHECK(size == 0 || memcmp(decoded, data, size) == 0);
	free(hex);
	free(decoded);
	free(text);
	return 0;
}
