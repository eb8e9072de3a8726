#include <criterion/criterion.h>

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "eventlog/signer.h"
#include "fledger/util.h"

/*
 * Each test gets a fresh temporary directory, and checks our keys and
 * signatures against the openssl command-line tool run in it.
 */
static char temp_dir[64];

static void make_temp_dir(void)
{
	strcpy(temp_dir, "/tmp/fl_test_signer.XXXXXX");
	cr_assert_not_null(mkdtemp(temp_dir));
}

static void remove_temp_dir(void)
{
	char command[128];
	snprintf(command, sizeof(command), "rm -rf '%s'", temp_dir);
	cr_assert_eq(system(command), 0);
}

/* Runs a shell command in the temporary directory; returns its exit status. */
static int sh(const char *format, ...)
{
	char inner[1024], command[1200];
	va_list args;
	va_start(args, format);
	vsnprintf(inner, sizeof(inner), format, args);
	va_end(args);
	snprintf(command, sizeof(command), "cd '%s' && { %s ; } </dev/null 2>>stderr.log", temp_dir,
		 inner);
	int status = system(command);
	return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void path_of(const char *name, char *ret_path, size_t size)
{
	snprintf(ret_path, size, "%s/%s", temp_dir, name);
}

/* Reads a file of the temporary directory (the caller frees it). */
static char *read_temp(const char *name, size_t *ret_len)
{
	char path[256];
	path_of(name, path, sizeof(path));
	char *text = NULL;
	cr_assert_eq(fl_file_read(path, &text, ret_len), FL_OK, "cannot read %s", name);
	return text;
}

static void write_temp(const char *name, const void *data, size_t len)
{
	char path[256];
	path_of(name, path, sizeof(path));
	FILE *file = fopen(path, "wb");
	cr_assert_not_null(file);
	cr_assert_eq(fwrite(data, 1, len, file), len);
	cr_assert_eq(fclose(file), 0);
}

static struct fl_signer *load_temp(const char *name)
{
	char path[256];
	path_of(name, path, sizeof(path));
	struct fl_signer *signer = NULL;
	cr_assert_eq(fl_signer_load(path, &signer), FL_OK, "cannot load %s", name);
	cr_assert_not_null(signer);
	return signer;
}

static void fill_pattern(uint8_t *bytes, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		bytes[i] = (uint8_t)(i * 131 + seed * 7 + (i >> 8));
}

/*
 * A PKCS#8 PEM of an Ed25519 private key from its raw 32-byte seed: the DER
 * is a fixed 16-byte prefix and the seed (RFC 8410 §7).
 */
static char *pem_of_seed(const char *seed_hex)
{
	static const uint8_t prefix[16] = {0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06,
					   0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20};
	uint8_t der[48];
	memcpy(der, prefix, sizeof(prefix));
	cr_assert_eq(fl_hex_decode(seed_hex, der + 16, 32), FL_OK);
	char body[65];
	fl_base64_encode(der, sizeof(der), body);
	char *pem = malloc(256);
	cr_assert_not_null(pem);
	snprintf(pem, 256, "-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n", body);
	return pem;
}

/* Our save writes PKCS#8 PEM, mode 0600, that we and openssl read back. */
Test(signer, generate_save_load_round_trip, .init = make_temp_dir, .fini = remove_temp_dir)
{
	struct fl_signer *made = NULL;
	cr_assert_eq(fl_signer_generate(&made), FL_OK);
	char path[256];
	path_of("k.pem", path, sizeof(path));
	cr_assert_eq(fl_signer_save(made, path), FL_OK);

	struct stat info;
	cr_assert_eq(stat(path, &info), 0);
	cr_assert_eq(info.st_mode & 0777, 0600);
	size_t len;
	char *text = read_temp("k.pem", &len);
	cr_assert_eq(strncmp(text, "-----BEGIN PRIVATE KEY-----\n", 28), 0, "%s", text);
	free(text);

	struct fl_signer *loaded = load_temp("k.pem");
	uint8_t made_pub[FL_PUBKEY_LEN], loaded_pub[FL_PUBKEY_LEN];
	fl_signer_public_key(made, made_pub);
	fl_signer_public_key(loaded, loaded_pub);
	cr_assert_arr_eq(made_pub, loaded_pub, FL_PUBKEY_LEN);
	cr_assert_str_eq(fl_signer_key_id(made), fl_signer_key_id(loaded));
	cr_assert_str_eq(fl_signer_public_pem(made), fl_signer_public_pem(loaded));

	/* Ed25519 is deterministic: the same private key gives the same signature. */
	uint8_t msg[32], made_sig[FL_SIG_LEN], loaded_sig[FL_SIG_LEN];
	fill_pattern(msg, sizeof(msg), 1);
	cr_assert_eq(fl_signer_sign(made, msg, sizeof(msg), made_sig), FL_OK);
	cr_assert_eq(fl_signer_sign(loaded, msg, sizeof(msg), loaded_sig), FL_OK);
	cr_assert_arr_eq(made_sig, loaded_sig, FL_SIG_LEN);
	cr_assert(fl_sig_verify(made_pub, msg, sizeof(msg), loaded_sig));

	/* openssl reads the saved key and derives the same public key. */
	cr_assert_eq(sh("openssl pkey -in k.pem -pubout -out pub.pem"), 0);
	text = read_temp("pub.pem", &len);
	cr_assert_str_eq(text, fl_signer_public_pem(made));
	free(text);

	/* Two generated keys differ. */
	struct fl_signer *other = NULL;
	cr_assert_eq(fl_signer_generate(&other), FL_OK);
	uint8_t other_pub[FL_PUBKEY_LEN];
	fl_signer_public_key(other, other_pub);
	cr_assert_arr_neq(other_pub, made_pub, FL_PUBKEY_LEN);

	fl_signer_destroy(other);
	fl_signer_destroy(loaded);
	fl_signer_destroy(made);
	fl_signer_destroy(NULL);
}

Test(signer, save_replaces_a_wider_file_and_leaves_no_temp, .init = make_temp_dir,
     .fini = remove_temp_dir)
{
	cr_assert_eq(sh("echo old > k.pem && chmod 0644 k.pem"), 0);
	struct fl_signer *signer = NULL;
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	char path[256];
	path_of("k.pem", path, sizeof(path));
	cr_assert_eq(fl_signer_save(signer, path), FL_OK);

	struct stat info;
	cr_assert_eq(stat(path, &info), 0);
	cr_assert_eq(info.st_mode & 0777, 0600);
	struct fl_signer *loaded = load_temp("k.pem");
	cr_assert_str_eq(fl_signer_key_id(loaded), fl_signer_key_id(signer));

	DIR *dir = opendir(temp_dir);
	cr_assert_not_null(dir);
	struct dirent *entry;
	while ((entry = readdir(dir)) != NULL)
		cr_assert(entry->d_name[0] == '.' || strcmp(entry->d_name, "k.pem") == 0 ||
			      strcmp(entry->d_name, "stderr.log") == 0,
			  "left behind %s", entry->d_name);
	closedir(dir);

	path_of("no/such/dir/k.pem", path, sizeof(path));
	cr_assert_eq(fl_signer_save(signer, path), FL_ERR_NOT_FOUND);
	cr_assert_eq(fl_signer_save(NULL, path), FL_ERR_INVALID);
	cr_assert_eq(fl_signer_save(signer, NULL), FL_ERR_INVALID);
	cr_assert_eq(fl_signer_save(signer, ""), FL_ERR_INVALID);

	fl_signer_destroy(loaded);
	fl_signer_destroy(signer);
}

/* A key from `openssl genpkey` loads; its public key matches openssl's. */
Test(signer, loads_openssl_key, .init = make_temp_dir, .fini = remove_temp_dir)
{
	cr_assert_eq(sh("openssl genpkey -algorithm ed25519 -out k.pem"), 0);
	cr_assert_eq(sh("openssl pkey -in k.pem -pubout -out pub.pem"), 0);
	struct fl_signer *signer = load_temp("k.pem");

	size_t pem_len;
	char *openssl_pem = read_temp("pub.pem", &pem_len);
	cr_assert_eq(strncmp(openssl_pem, "-----BEGIN PUBLIC KEY-----\n", 27), 0);
	cr_assert_str_eq(fl_signer_public_pem(signer), openssl_pem);

	uint8_t pub[FL_PUBKEY_LEN], from_pem[FL_PUBKEY_LEN];
	fl_signer_public_key(signer, pub);
	cr_assert_eq(fl_pubkey_from_pem(openssl_pem, pem_len, from_pem), FL_OK);
	cr_assert_arr_eq(from_pem, pub, FL_PUBKEY_LEN);

	/* The raw key is the last 32 bytes of the DER SubjectPublicKeyInfo. */
	cr_assert_eq(sh("openssl pkey -in k.pem -pubout -outform DER | tail -c 32 > pub.raw"), 0);
	size_t raw_len;
	char *raw = read_temp("pub.raw", &raw_len);
	cr_assert_eq(raw_len, FL_PUBKEY_LEN);
	cr_assert_arr_eq(raw, pub, FL_PUBKEY_LEN);

	char *pem = NULL;
	cr_assert_eq(fl_pubkey_to_pem(pub, &pem), FL_OK);
	cr_assert_str_eq(pem, openssl_pem);

	free(pem);
	free(raw);
	free(openssl_pem);
	fl_signer_destroy(signer);
}

Test(signer, key_id_matches_shell_pipeline, .init = make_temp_dir, .fini = remove_temp_dir)
{
	cr_assert_eq(sh("openssl genpkey -algorithm ed25519 -out k.pem"), 0);
	cr_assert_eq(sh("openssl pkey -in k.pem -pubout -outform DER | tail -c 32 | sha256sum | "
			"cut -c1-16 > key_id.txt"),
		     0);
	size_t len;
	char *expected = read_temp("key_id.txt", &len);
	cr_assert_eq(len, 17);
	expected[16] = '\0';

	struct fl_signer *signer = load_temp("k.pem");
	cr_assert_str_eq(fl_signer_key_id(signer), expected);
	cr_assert_eq(strlen(fl_signer_key_id(signer)), FL_KEY_ID_HEX_LEN - 1);

	uint8_t pub[FL_PUBKEY_LEN];
	char key_id[FL_KEY_ID_HEX_LEN];
	fl_signer_public_key(signer, pub);
	fl_key_id_of(pub, key_id);
	cr_assert_str_eq(key_id, expected);

	free(expected);
	fl_signer_destroy(signer);
}

/* RFC 8032 §7.1 TEST 1 and TEST 2, through a PEM built from the seed. */
Test(signer, matches_rfc8032_vectors)
{
	static const struct {
		const char *seed, *pub, *msg, *sig;
	} vectors[] = {
	    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
	     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
	     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
	     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
	    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
	     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
	     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
	     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
	};
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		char *pem = pem_of_seed(vectors[i].seed);
		struct fl_signer *signer = NULL;
		cr_assert_eq(fl_signer_from_pem(pem, strlen(pem), &signer), FL_OK);

		uint8_t pub[FL_PUBKEY_LEN], expected_pub[FL_PUBKEY_LEN];
		fl_signer_public_key(signer, pub);
		cr_assert_eq(fl_hex_decode(vectors[i].pub, expected_pub, FL_PUBKEY_LEN), FL_OK);
		cr_assert_arr_eq(pub, expected_pub, FL_PUBKEY_LEN);

		size_t msg_len = strlen(vectors[i].msg) / 2;
		uint8_t msg[1];
		cr_assert_eq(fl_hex_decode(vectors[i].msg, msg, msg_len), FL_OK);
		uint8_t sig[FL_SIG_LEN], expected_sig[FL_SIG_LEN];
		cr_assert_eq(fl_hex_decode(vectors[i].sig, expected_sig, FL_SIG_LEN), FL_OK);
		cr_assert_eq(fl_signer_sign(signer, msg_len > 0 ? msg : NULL, msg_len, sig), FL_OK);
		cr_assert_arr_eq(sig, expected_sig, FL_SIG_LEN);
		cr_assert(fl_sig_verify(expected_pub, msg_len > 0 ? msg : NULL, msg_len, sig));

		fl_signer_destroy(signer);
		free(pem);
	}
}

/* Our signature over 32 bytes passes `openssl pkeyutl -verify`; a flipped bit fails. */
Test(signer, openssl_verifies_our_signature, .init = make_temp_dir, .fini = remove_temp_dir)
{
	struct fl_signer *signer = NULL;
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	const char *pub_pem = fl_signer_public_pem(signer);
	write_temp("pub.pem", pub_pem, strlen(pub_pem));

	uint8_t msg[32], sig[FL_SIG_LEN];
	fill_pattern(msg, sizeof(msg), 2);
	cr_assert_eq(fl_signer_sign(signer, msg, sizeof(msg), sig), FL_OK);
	write_temp("msg.bin", msg, sizeof(msg));
	write_temp("sig.bin", sig, sizeof(sig));
	const char *verify =
	    "openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in %s -sigfile %s >/dev/null";
	cr_assert_eq(sh(verify, "msg.bin", "sig.bin"), 0);

	uint8_t bad_sig[FL_SIG_LEN];
	memcpy(bad_sig, sig, sizeof(sig));
	bad_sig[10] ^= 0x04;
	write_temp("bad_sig.bin", bad_sig, sizeof(bad_sig));
	cr_assert_neq(sh(verify, "msg.bin", "bad_sig.bin"), 0);

	uint8_t bad_msg[32];
	memcpy(bad_msg, msg, sizeof(msg));
	bad_msg[31] ^= 0x80;
	write_temp("bad_msg.bin", bad_msg, sizeof(bad_msg));
	cr_assert_neq(sh(verify, "bad_msg.bin", "sig.bin"), 0);

	fl_signer_destroy(signer);
}

/* A signature from `openssl pkeyutl -sign` passes fl_sig_verify; a flipped bit fails. */
Test(signer, we_verify_openssl_signature, .init = make_temp_dir, .fini = remove_temp_dir)
{
	cr_assert_eq(sh("openssl genpkey -algorithm ed25519 -out k.pem"), 0);
	uint8_t msg[32];
	fill_pattern(msg, sizeof(msg), 3);
	write_temp("msg.bin", msg, sizeof(msg));
	cr_assert_eq(sh("openssl pkeyutl -sign -inkey k.pem -rawin -in msg.bin -out sig.bin"), 0);
	size_t sig_len;
	uint8_t *sig = (uint8_t *)read_temp("sig.bin", &sig_len);
	cr_assert_eq(sig_len, FL_SIG_LEN);

	struct fl_signer *signer = load_temp("k.pem");
	uint8_t pub[FL_PUBKEY_LEN];
	fl_signer_public_key(signer, pub);
	cr_assert(fl_sig_verify(pub, msg, sizeof(msg), sig));

	/* Deterministic Ed25519: our signature is byte for byte openssl's. */
	uint8_t ours[FL_SIG_LEN];
	cr_assert_eq(fl_signer_sign(signer, msg, sizeof(msg), ours), FL_OK);
	cr_assert_arr_eq(ours, sig, FL_SIG_LEN);

	for (size_t bit = 0; bit < 8 * FL_SIG_LEN; bit += 37) {
		sig[bit / 8] ^= (uint8_t)(1u << bit % 8);
		cr_assert_not(fl_sig_verify(pub, msg, sizeof(msg), sig), "bit %zu", bit);
		sig[bit / 8] ^= (uint8_t)(1u << bit % 8);
	}
	msg[0] ^= 1;
	cr_assert_not(fl_sig_verify(pub, msg, sizeof(msg), sig));
	msg[0] ^= 1;
	pub[5] ^= 0x10;
	cr_assert_not(fl_sig_verify(pub, msg, sizeof(msg), sig));
	pub[5] ^= 0x10;
	cr_assert(fl_sig_verify(pub, msg, sizeof(msg), sig));
	cr_assert_not(fl_sig_verify(pub, msg, sizeof(msg) - 1, sig));

	free(sig);
	fl_signer_destroy(signer);
}

/* S + L (the group order) is the same signature in a malleated, non-canonical form. */
Test(signer, rejects_non_canonical_signature)
{
	static const uint8_t order[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58,
					  0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
					  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
					  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};
	struct fl_signer *signer = NULL;
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	uint8_t pub[FL_PUBKEY_LEN], msg[32], sig[FL_SIG_LEN];
	fl_signer_public_key(signer, pub);
	fill_pattern(msg, sizeof(msg), 4);
	cr_assert_eq(fl_signer_sign(signer, msg, sizeof(msg), sig), FL_OK);
	cr_assert(fl_sig_verify(pub, msg, sizeof(msg), sig));

	unsigned carry = 0;
	for (int i = 0; i < 32; i++) {
		unsigned sum = sig[32 + i] + order[i] + carry;
		sig[32 + i] = (uint8_t)sum;
		carry = sum >> 8;
	}
	cr_assert_not(fl_sig_verify(pub, msg, sizeof(msg), sig));
	fl_signer_destroy(signer);
}

Test(signer, signs_empty_and_long_messages)
{
	struct fl_signer *signer = NULL;
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	uint8_t pub[FL_PUBKEY_LEN], sig[FL_SIG_LEN];
	fl_signer_public_key(signer, pub);

	cr_assert_eq(fl_signer_sign(signer, NULL, 0, sig), FL_OK);
	cr_assert(fl_sig_verify(pub, NULL, 0, sig));
	cr_assert(fl_sig_verify(pub, (const uint8_t *)"", 0, sig));

	size_t long_len = 1 << 20;
	uint8_t *long_msg = malloc(long_len);
	cr_assert_not_null(long_msg);
	fill_pattern(long_msg, long_len, 5);
	cr_assert_eq(fl_signer_sign(signer, long_msg, long_len, sig), FL_OK);
	cr_assert(fl_sig_verify(pub, long_msg, long_len, sig));
	long_msg[long_len - 1] ^= 1;
	cr_assert_not(fl_sig_verify(pub, long_msg, long_len, sig));
	free(long_msg);

	uint8_t untouched[FL_SIG_LEN] = {0};
	cr_assert_eq(fl_signer_sign(NULL, pub, 1, untouched), FL_ERR_INVALID);
	cr_assert_eq(fl_signer_sign(signer, NULL, 1, untouched), FL_ERR_INVALID);
	cr_assert_eq(fl_signer_sign(signer, pub, 1, NULL), FL_ERR_INVALID);
	for (size_t i = 0; i < FL_SIG_LEN; i++)
		cr_assert_eq(untouched[i], 0);
	cr_assert_not(fl_sig_verify(NULL, pub, 1, sig));
	cr_assert_not(fl_sig_verify(pub, NULL, 1, sig));
	cr_assert_not(fl_sig_verify(pub, pub, 1, NULL));
	fl_signer_destroy(signer);
}

/* Keys that are not Ed25519 are refused, private and public alike. */
Test(signer, rejects_other_key_types, .init = make_temp_dir, .fini = remove_temp_dir)
{
	static const struct {
		const char *name, *genpkey;
	} keys[] = {
	    {"rsa.pem", "-algorithm RSA -pkeyopt rsa_keygen_bits:1024"},
	    {"ec.pem", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"},
	    {"x25519.pem", "-algorithm X25519"},
	    {"ed448.pem", "-algorithm ED448"},
	};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		cr_assert_eq(sh("openssl genpkey %s -out %s", keys[i].genpkey, keys[i].name), 0);
		cr_assert_eq(
		    sh("openssl pkey -in %s -pubout -out pub_%s", keys[i].name, keys[i].name), 0);
		char path[256];
		path_of(keys[i].name, path, sizeof(path));
		struct fl_signer *signer = NULL;
		cr_assert_eq(fl_signer_load(path, &signer), FL_ERR_CRYPTO, "accepted %s",
			     keys[i].name);
		cr_assert_null(signer);

		char pub_name[64];
		snprintf(pub_name, sizeof(pub_name), "pub_%s", keys[i].name);
		size_t len;
		char *pem = read_temp(pub_name, &len);
		uint8_t pub[FL_PUBKEY_LEN];
		cr_assert_eq(fl_pubkey_from_pem(pem, len, pub), FL_ERR_CRYPTO, "accepted %s",
			     pub_name);
		free(pem);
	}
}

/* Text that holds no usable private key, an encrypted key included, is refused. */
Test(signer, rejects_bad_pem, .init = make_temp_dir, .fini = remove_temp_dir, .timeout = 30)
{
	struct fl_signer *signer = NULL;
	const char garbage[] = "hello, not a key\n";
	cr_assert_eq(fl_signer_from_pem(garbage, strlen(garbage), &signer), FL_ERR_INVALID);
	cr_assert_eq(fl_signer_from_pem(garbage, 0, &signer), FL_ERR_INVALID);
	cr_assert_eq(fl_signer_from_pem(NULL, 10, &signer), FL_ERR_INVALID);
	cr_assert_eq(fl_signer_from_pem(garbage, strlen(garbage), NULL), FL_ERR_INVALID);

	/* The PEM cut short. */
	char *pem = pem_of_seed("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
	cr_assert_eq(fl_signer_from_pem(pem, strlen(pem) - 30, &signer), FL_ERR_INVALID);
	free(pem);

	/* A public key is not a private key. */
	cr_assert_eq(sh("openssl genpkey -algorithm ed25519 -out k.pem"), 0);
	cr_assert_eq(sh("openssl pkey -in k.pem -pubout -out pub.pem"), 0);
	size_t len;
	char *pub_pem = read_temp("pub.pem", &len);
	cr_assert_eq(fl_signer_from_pem(pub_pem, len, &signer), FL_ERR_INVALID);
	uint8_t pub[FL_PUBKEY_LEN];
	cr_assert_eq(fl_pubkey_from_pem(garbage, strlen(garbage), pub), FL_ERR_INVALID);
	cr_assert_eq(fl_pubkey_from_pem(pub_pem, len - 40, pub), FL_ERR_INVALID);
	free(pub_pem);

	/* An encrypted key fails at once instead of prompting for a passphrase. */
	cr_assert_eq(sh("openssl genpkey -algorithm ed25519 -aes-256-cbc -pass pass:secret "
			"-out enc.pem"),
		     0);
	char path[256];
	path_of("enc.pem", path, sizeof(path));
	cr_assert_eq(fl_signer_load(path, &signer), FL_ERR_INVALID);

	path_of("missing.pem", path, sizeof(path));
	cr_assert_eq(fl_signer_load(path, &signer), FL_ERR_NOT_FOUND);
	cr_assert_null(signer);
}

struct sign_job {
	const struct fl_signer *signer;
	unsigned thread;
	uint8_t sigs[200][FL_SIG_LEN];
	enum fl_status status;
};

static void *sign_many(void *arg)
{
	struct sign_job *job = arg;
	job->status = FL_OK;
	for (unsigned i = 0; i < 200 && job->status == FL_OK; i++) {
		uint8_t msg[32];
		fill_pattern(msg, sizeof(msg), i);
		job->status = fl_signer_sign(job->signer, msg, sizeof(msg), job->sigs[i]);
	}
	return NULL;
}

/* Threads sharing one signer get the signatures a single thread gets. */
Test(signer, signs_from_many_threads)
{
	struct fl_signer *signer = NULL;
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	enum { THREADS = 4 };
	static struct sign_job jobs[THREADS];
	pthread_t threads[THREADS];
	for (unsigned t = 0; t < THREADS; t++) {
		jobs[t].signer = signer;
		jobs[t].thread = t;
		cr_assert_eq(pthread_create(&threads[t], NULL, sign_many, &jobs[t]), 0);
	}
	for (unsigned t = 0; t < THREADS; t++)
		cr_assert_eq(pthread_join(threads[t], NULL), 0);

	uint8_t pub[FL_PUBKEY_LEN];
	fl_signer_public_key(signer, pub);
	for (unsigned i = 0; i < 200; i++) {
		uint8_t msg[32], expected[FL_SIG_LEN];
		fill_pattern(msg, sizeof(msg), i);
		cr_assert_eq(fl_signer_sign(signer, msg, sizeof(msg), expected), FL_OK);
		cr_assert(fl_sig_verify(pub, msg, sizeof(msg), expected));
		for (unsigned t = 0; t < THREADS; t++) {
			cr_assert_eq(jobs[t].status, FL_OK);
			cr_assert_arr_eq(jobs[t].sigs[i], expected, FL_SIG_LEN, "thread %u msg %u",
					 t, i);
		}
	}
	fl_signer_destroy(signer);
}
