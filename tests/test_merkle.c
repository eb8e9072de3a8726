/*
 * Tests of eventlog/merkle.c against the RFC 6962 test vectors published with
 * google/certificate-transparency and transparency-dev/merkle, and against a
 * naive recursive transcription of RFC 9162 (MTH, PATH, SUBPROOF) that works
 * on leaf ranges rather than bits.
 */

#include <criterion/criterion.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "eventlog/merkle.h"

/* Only fails; cheap enough for the inner loops that run millions of times. */
#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			cr_assert_fail(__VA_ARGS__);                                               \
	} while (0)

#define MAX_LEAVES 64u
#define MAX_LEVELS 7 /* levels 0..6 cover 64 leaves */

struct range {
	uint64_t begin;
	uint64_t end;
};

/* ---- helpers ------------------------------------------------------------ */

static void from_hex(const char *hex, uint8_t *out, size_t len)
{
	cr_assert_eq(strlen(hex), 2 * len, "bad hex literal %s", hex);
	for (size_t i = 0; i < len; i++) {
		unsigned byte;

		cr_assert_eq(sscanf(hex + 2 * i, "%2x", &byte), 1);
		out[i] = (uint8_t)byte;
	}
}

static bool hash_is(const uint8_t hash[FL_HASH_LEN], const char *hex)
{
	uint8_t expected[FL_HASH_LEN];

	from_hex(hex, expected, FL_HASH_LEN);
	return memcmp(hash, expected, FL_HASH_LEN) == 0;
}

/* xorshift64*: a fixed-seed source of leaves and bit positions. */
static uint64_t rng_next(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 0x2545F4914F6CDD1DULL;
}

static bool is_power_of_two(uint64_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

static unsigned popcount(uint64_t x)
{
	unsigned count = 0;

	for (; x != 0; x &= x - 1)
		count++;
	return count;
}

static unsigned ceil_log2(uint64_t x)
{
	unsigned bits = 0;

	while (bits < 64 && ((uint64_t)1 << bits) < x)
		bits++;
	return bits;
}

/* ---- the naive reference: RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1 ------------ */

/* k: the largest power of two smaller than width (width >= 2), without bit tricks. */
static uint64_t ref_split(uint64_t width)
{
	uint64_t k = 1;

	while (k < width - k)
		k *= 2;
	return k;
}

/* MTH(D[begin:end]) straight from the definition; begin < end. */
static void ref_mth(const uint8_t leaf_hashes[][FL_HASH_LEN], uint64_t begin, uint64_t end,
		    uint8_t ret_hash[FL_HASH_LEN])
{
	uint8_t left[FL_HASH_LEN], right[FL_HASH_LEN];
	uint64_t k;

	if (end - begin == 1) {
		memcpy(ret_hash, leaf_hashes[begin], FL_HASH_LEN);
		return;
	}
	k = ref_split(end - begin);
	ref_mth(leaf_hashes, begin, begin + k, left);
	ref_mth(leaf_hashes, begin + k, end, right);
	fl_merkle_node_hash(left, right, ret_hash);
}

/* PATH(leaf, D[begin:end]) as the list of subtrees whose MTHs it holds. */
static size_t ref_path(uint64_t leaf, uint64_t begin, uint64_t end, struct range *ret_ranges)
{
	uint64_t k;
	size_t count;

	if (end - begin == 1)
		return 0;
	k = ref_split(end - begin);
	if (leaf < begin + k) {
		count = ref_path(leaf, begin, begin + k, ret_ranges);
		ret_ranges[count++] = (struct range){begin + k, end};
	} else {
		count = ref_path(leaf, begin + k, end, ret_ranges);
		ret_ranges[count++] = (struct range){begin, begin + k};
	}
	return count;
}

/* SUBPROOF(m, D[begin:end], whole) likewise; m is relative to begin. */
static size_t ref_subproof(uint64_t m, uint64_t begin, uint64_t end, bool whole,
			   struct range *ret_ranges)
{
	uint64_t k;
	size_t count;

	if (m == end - begin) {
		if (whole)
			return 0;
		ret_ranges[0] = (struct range){begin, end};
		return 1;
	}
	k = ref_split(end - begin);
	if (m <= k) {
		count = ref_subproof(m, begin, begin + k, whole, ret_ranges);
		ret_ranges[count++] = (struct range){begin + k, end};
	} else {
		count = ref_subproof(m - k, begin + k, end, false, ret_ranges);
		ret_ranges[count++] = (struct range){begin, begin + k};
	}
	return count;
}

/* A subtree whose hash a verifier is handed. */
struct known {
	struct range range;
	const uint8_t *hash;
};

/*
 * MTH(D[begin:end]) computed from the known subtrees alone, by the RFC's
 * recursion; false when it needs a leaf nobody supplied. This is the oracle
 * for probes the bit-twiddling verifiers might legitimately accept.
 */
static bool rebuild(const struct known *known, size_t known_count, uint64_t begin, uint64_t end,
		    uint8_t ret_hash[FL_HASH_LEN])
{
	uint8_t left[FL_HASH_LEN], right[FL_HASH_LEN];
	uint64_t k;

	for (size_t i = 0; i < known_count; i++) {
		if (known[i].range.begin == begin && known[i].range.end == end) {
			memcpy(ret_hash, known[i].hash, FL_HASH_LEN);
			return true;
		}
	}
	if (end - begin == 1)
		return false;
	k = ref_split(end - begin);
	if (!rebuild(known, known_count, begin, begin + k, left) ||
	    !rebuild(known, known_count, begin + k, end, right))
		return false;
	fl_merkle_node_hash(left, right, ret_hash);
	return true;
}

/*
 * Whether the proof, read as the RFC proof for (leaf_index, tree_size), leads
 * to root: what any correct verifier must answer.
 */
static bool oracle_inclusion(const uint8_t leaf_hash[FL_HASH_LEN], uint64_t leaf_index,
			     uint64_t tree_size, const uint8_t hashes[][FL_HASH_LEN], size_t count,
			     const uint8_t root[FL_HASH_LEN])
{
	struct range ranges[FL_MERKLE_MAX_PROOF + 1];
	struct known known[FL_MERKLE_MAX_PROOF + 2];
	uint8_t rebuilt[FL_HASH_LEN];
	size_t expected;

	if (leaf_index >= tree_size)
		return false;
	expected = ref_path(leaf_index, 0, tree_size, ranges);
	if (expected != count)
		return false;
	for (size_t i = 0; i < count; i++)
		known[i] = (struct known){ranges[i], hashes[i]};
	known[count] = (struct known){{leaf_index, leaf_index + 1}, leaf_hash};
	return rebuild(known, count + 1, 0, tree_size, rebuilt) &&
	       memcmp(rebuilt, root, FL_HASH_LEN) == 0;
}

/* The same for consistency proofs, with our API's rules for first == second. */
static bool oracle_consistency(uint64_t first, uint64_t second,
			       const uint8_t first_root[FL_HASH_LEN],
			       const uint8_t second_root[FL_HASH_LEN],
			       const uint8_t hashes[][FL_HASH_LEN], size_t count)
{
	struct range ranges[FL_MERKLE_MAX_PROOF + 1];
	struct known known[FL_MERKLE_MAX_PROOF + 2];
	uint8_t rebuilt[FL_HASH_LEN];
	size_t known_count;

	if (first == 0 || first > second)
		return false;
	if (first == second)
		return count == 0 && memcmp(first_root, second_root, FL_HASH_LEN) == 0;
	known_count = ref_subproof(first, 0, second, true, ranges);
	if (known_count != count)
		return false;
	for (size_t i = 0; i < count; i++)
		known[i] = (struct known){ranges[i], hashes[i]};
	if (is_power_of_two(first))
		known[known_count++] = (struct known){{0, first}, first_root};
	if (!rebuild(known, known_count, 0, first, rebuilt) ||
	    memcmp(rebuilt, first_root, FL_HASH_LEN) != 0)
		return false;
	return rebuild(known, known_count, 0, second, rebuilt) &&
	       memcmp(rebuilt, second_root, FL_HASH_LEN) == 0;
}

/* ---- an in-memory node store fed by the frontier ------------------------- */

struct node_store {
	uint8_t hashes[MAX_LEVELS][MAX_LEAVES][FL_HASH_LEN];
	bool present[MAX_LEVELS][MAX_LEAVES];
	uint64_t tree_size; /* get_node refuses nodes beyond it */
	unsigned get_calls;
	unsigned fail_get_at; /* the get_calls value that fails; 0 for none */
	enum fl_status fail_status;
};

static enum fl_status store_put(void *ctx, unsigned level, uint64_t index,
				const uint8_t hash[FL_HASH_LEN])
{
	struct node_store *store = ctx;

	cr_assert_lt(level, MAX_LEVELS);
	cr_assert_lt(index, MAX_LEAVES >> level);
	cr_assert(!store->present[level][index], "node (%u, %lu) stored twice", level,
		  (unsigned long)index);
	memcpy(store->hashes[level][index], hash, FL_HASH_LEN);
	store->present[level][index] = true;
	return FL_OK;
}

static enum fl_status store_get(void *ctx, unsigned level, uint64_t index,
				uint8_t ret_hash[FL_HASH_LEN])
{
	struct node_store *store = ctx;

	store->get_calls++;
	if (store->fail_get_at != 0 && store->get_calls == store->fail_get_at)
		return store->fail_status;
	/* A node past tree_size, even if stored, belongs to a later tree. */
	if (level >= MAX_LEVELS || index >= (store->tree_size >> level) ||
	    !store->present[level][index])
		return FL_ERR_NOT_FOUND;
	memcpy(ret_hash, store->hashes[level][index], FL_HASH_LEN);
	return FL_OK;
}

/* A tree of random leaves from a fixed seed, appended through the frontier. */
struct fixture {
	uint8_t leaf_hashes[MAX_LEAVES][FL_HASH_LEN];
	struct node_store store;
	struct fl_merkle_frontier frontier;
};

static void fixture_init(struct fixture *fx, uint64_t seed)
{
	uint64_t rng = seed;

	memset(fx, 0, sizeof(*fx));
	fl_merkle_frontier_init(&fx->frontier);
	for (size_t i = 0; i < MAX_LEAVES; i++) {
		uint8_t data[24];
		size_t len = rng_next(&rng) % sizeof(data);

		for (size_t j = 0; j < len; j++)
			data[j] = (uint8_t)rng_next(&rng);
		fl_merkle_leaf_hash(data, len, fx->leaf_hashes[i]);
	}
}

/* Appends the next leaf and makes the store answer for the new tree size. */
static void fixture_grow(struct fixture *fx)
{
	uint64_t leaf_index = fx->frontier.size;

	cr_assert_eq(fl_merkle_frontier_append(&fx->frontier, fx->leaf_hashes[leaf_index],
					       store_put, &fx->store),
		     FL_OK);
	fx->store.tree_size = fx->frontier.size;
}

static void fixture_root(struct fixture *fx, uint64_t tree_size, uint8_t ret_root[FL_HASH_LEN])
{
	ref_mth((const uint8_t(*)[FL_HASH_LEN])fx->leaf_hashes, 0, tree_size, ret_root);
}

/* ---- the published RFC 6962 vectors ------------------------------------- */

static const char *const rfc_leaves[8] = {
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
};

/* transparency-dev/merkle testonly/constants.go RootHashes(), by tree size. */
static const char *const rfc_roots[9] = {
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
};

/* The same file's NodeHashes(): every complete node of the 8-leaf tree. */
static const char *const rfc_nodes[4][8] = {
    {
	"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
	"0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
	"07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
	"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
	"4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
	"b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
	"46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    },
    {
	"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
	"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
	"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    },
    {
	"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    },
    {
	"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    },
};

/*
 * transparency-dev/merkle proof/verify_test.go inclusionProofs and
 * consistencyProofs (which number leaves from 1; here from 0).
 */
struct rfc_proof {
	uint64_t a, b; /* leaf index and tree size, or first and second */
	size_t count;
	const char *hashes[3];
};

static const struct rfc_proof rfc_inclusion_proofs[] = {
    {0, 1, 0, {NULL}},
    {0,
     8,
     3,
     {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
    {5,
     8,
     3,
     {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
    {2, 3, 1, {"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"}},
    {1,
     5,
     3,
     {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
};

static const struct rfc_proof rfc_consistency_proofs[] = {
    {1, 1, 0, {NULL}},
    {1,
     8,
     3,
     {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
    {6,
     8,
     3,
     {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
    {2,
     5,
     2,
     {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
    {6,
     7,
     3,
     {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
};

/* The published 8-leaf tree, appended through the frontier into store. */
static void rfc_tree(struct fixture *fx)
{
	memset(fx, 0, sizeof(*fx));
	fl_merkle_frontier_init(&fx->frontier);
	for (size_t i = 0; i < 8; i++) {
		uint8_t data[16];
		size_t len = strlen(rfc_leaves[i]) / 2;

		from_hex(rfc_leaves[i], data, len);
		fl_merkle_leaf_hash(data, len, fx->leaf_hashes[i]);
		fixture_grow(fx);
	}
}

Test(merkle, empty_tree_root_is_sha256_of_nothing)
{
	struct fl_merkle_frontier frontier;
	struct node_store store = {0};
	uint8_t root[FL_HASH_LEN];

	cr_assert_eq(fl_merkle_root(store_get, &store, 0, root), FL_OK);
	cr_assert(
	    hash_is(root, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
	cr_assert_eq(store.get_calls, 0);
	fl_merkle_frontier_init(&frontier);
	fl_merkle_frontier_root(&frontier, root);
	cr_assert(
	    hash_is(root, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
}

Test(merkle, hashes_match_rfc6962_vectors)
{
	static const uint8_t zeros[FL_HASH_LEN];
	struct fixture fx;

	rfc_tree(&fx);
	for (unsigned level = 0; level < 4; level++) {
		for (unsigned index = 0; index < (8u >> level); index++) {
			cr_assert(fx.store.present[level][index]);
			cr_assert(hash_is(fx.store.hashes[level][index], rfc_nodes[level][index]),
				  "node (%u, %u)", level, index);
		}
	}
	/* Domain separation: a node is not the plain SHA-256 of its children. */
	fl_merkle_node_hash(zeros, zeros, fx.leaf_hashes[0]);
	cr_assert(!hash_is(fx.leaf_hashes[0],
			   "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b"));
}

Test(merkle, roots_match_rfc6962_vectors)
{
	struct fixture fx;
	uint8_t root[FL_HASH_LEN];

	memset(&fx, 0, sizeof(fx));
	fl_merkle_frontier_init(&fx.frontier);
	for (uint64_t tree_size = 0; tree_size <= 8; tree_size++) {
		if (tree_size > 0) {
			uint8_t data[16];
			size_t len = strlen(rfc_leaves[tree_size - 1]) / 2;

			from_hex(rfc_leaves[tree_size - 1], data, len);
			fl_merkle_leaf_hash(data, len, fx.leaf_hashes[tree_size - 1]);
			fixture_grow(&fx);
		}
		cr_assert_eq(fl_merkle_root(store_get, &fx.store, tree_size, root), FL_OK);
		cr_assert(hash_is(root, rfc_roots[tree_size]), "fl_merkle_root of %lu",
			  (unsigned long)tree_size);
		fl_merkle_frontier_root(&fx.frontier, root);
		cr_assert(hash_is(root, rfc_roots[tree_size]), "frontier root of %lu",
			  (unsigned long)tree_size);
	}
}

Test(merkle, proofs_match_published_vectors)
{
	struct fixture fx;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	uint8_t first_root[FL_HASH_LEN], second_root[FL_HASH_LEN];
	size_t count;

	rfc_tree(&fx);
	for (size_t v = 0; v < sizeof(rfc_inclusion_proofs) / sizeof(rfc_inclusion_proofs[0]);
	     v++) {
		const struct rfc_proof *p = &rfc_inclusion_proofs[v];

		fx.store.tree_size = p->b;
		cr_assert_eq(
		    fl_merkle_inclusion_proof(store_get, &fx.store, p->a, p->b, hashes, &count),
		    FL_OK);
		cr_assert_eq(count, p->count, "inclusion %lu in %lu", (unsigned long)p->a,
			     (unsigned long)p->b);
		for (size_t i = 0; i < count; i++)
			cr_assert(hash_is(hashes[i], p->hashes[i]));
		from_hex(rfc_roots[p->b], second_root, FL_HASH_LEN);
		cr_assert(fl_merkle_verify_inclusion(fx.leaf_hashes[p->a], p->a, p->b,
						     (const uint8_t(*)[FL_HASH_LEN])hashes, count,
						     second_root));
	}
	for (size_t v = 0; v < sizeof(rfc_consistency_proofs) / sizeof(rfc_consistency_proofs[0]);
	     v++) {
		const struct rfc_proof *p = &rfc_consistency_proofs[v];

		fx.store.tree_size = p->b;
		cr_assert_eq(
		    fl_merkle_consistency_proof(store_get, &fx.store, p->a, p->b, hashes, &count),
		    FL_OK);
		cr_assert_eq(count, p->count, "consistency %lu to %lu", (unsigned long)p->a,
			     (unsigned long)p->b);
		for (size_t i = 0; i < count; i++)
			cr_assert(hash_is(hashes[i], p->hashes[i]));
		from_hex(rfc_roots[p->a], first_root, FL_HASH_LEN);
		from_hex(rfc_roots[p->b], second_root, FL_HASH_LEN);
		cr_assert(fl_merkle_verify_consistency(p->a, p->b, first_root, second_root,
						       (const uint8_t(*)[FL_HASH_LEN])hashes,
						       count));
	}
}

/*
 * The frontier hands over each leaf, then each interior node it completes,
 * bottom-up, each once, and every stored node is the MTH of its leaves.
 */
Test(merkle, frontier_stores_each_complete_node_once_bottom_up)
{
	struct fixture fx;

	fixture_init(&fx, 7);
	for (uint64_t leaf_index = 0; leaf_index < MAX_LEAVES; leaf_index++) {
		fixture_grow(&fx);
		cr_assert_eq(fx.frontier.size, leaf_index + 1);
		for (unsigned level = 0; level < MAX_LEVELS; level++) {
			for (uint64_t index = 0; index < (MAX_LEAVES >> level); index++) {
				bool complete = ((index + 1) << level) <= leaf_index + 1;
				uint8_t expected[FL_HASH_LEN];

				cr_assert_eq(fx.store.present[level][index], complete,
					     "node (%u, %lu) after %lu leaves", level,
					     (unsigned long)index, (unsigned long)leaf_index + 1);
				if (!complete)
					continue;
				ref_mth((const uint8_t(*)[FL_HASH_LEN])fx.leaf_hashes,
					index << level, (index + 1) << level, expected);
				cr_assert_eq(
				    memcmp(fx.store.hashes[level][index], expected, FL_HASH_LEN),
				    0);
			}
		}
	}
}

struct store_log {
	unsigned levels[MAX_LEVELS + 1];
	uint64_t indexes[MAX_LEVELS + 1];
	unsigned count;
	unsigned fail_at; /* 1-based call that fails; 0 for none */
};

static enum fl_status log_put(void *ctx, unsigned level, uint64_t index,
			      const uint8_t hash[FL_HASH_LEN])
{
	struct store_log *log = ctx;

	(void)hash;
	cr_assert_lt(log->count, MAX_LEVELS + 1);
	log->levels[log->count] = level;
	log->indexes[log->count] = index;
	log->count++;
	return log->count == log->fail_at ? FL_ERR_FULL : FL_OK;
}

Test(merkle, frontier_store_order_and_failure)
{
	struct fl_merkle_frontier frontier;
	uint8_t leaf[FL_HASH_LEN] = {1};

	fl_merkle_frontier_init(&frontier);
	for (uint64_t leaf_index = 0; leaf_index < 40; leaf_index++) {
		struct store_log log = {0};
		unsigned finished = 0;

		cr_assert_eq(fl_merkle_frontier_append(&frontier, leaf, log_put, &log), FL_OK);
		while (((leaf_index >> finished) & 1) != 0)
			finished++;
		cr_assert_eq(log.count, finished + 1);
		for (unsigned i = 0; i <= finished; i++) {
			cr_assert_eq(log.levels[i], i);
			cr_assert_eq(log.indexes[i], leaf_index >> i);
		}
	}
	/* Appending leaf 39 finishes (0,39) (1,19) (2,9) (3,4); fail each in turn. */
	for (unsigned fail_at = 1; fail_at <= 4; fail_at++) {
		struct fl_merkle_frontier copy = frontier;
		struct store_log log = {.fail_at = fail_at};

		copy.size = 40 - 1;
		cr_assert_eq(fl_merkle_frontier_append(&copy, leaf, log_put, &log), FL_ERR_FULL);
		cr_assert_eq(log.count, fail_at, "store called again after it failed");
	}
	/* A NULL store is allowed. */
	cr_assert_eq(fl_merkle_frontier_append(&frontier, leaf, NULL, NULL), FL_OK);
	cr_assert_eq(frontier.size, 41);
}

/*
 * One proof against its verifier: it verifies, and every corruption of it
 * fails. Wrong leaf indexes always fail. Wrong tree sizes are compared with
 * the oracle, because RFC 9162 verification does not bind the tree size when
 * two sizes give the leaf the same path: the proof for leaf 0 of 5 leaves also
 * "verifies" for 6, 7 and 8 leaves against the 5-leaf root. Sizes whose proof
 * has another length, such as twice and half the size, always fail.
 */
static void check_inclusion_probes(const struct fixture *fx, uint64_t leaf_index,
				   uint64_t tree_size, uint8_t hashes[][FL_HASH_LEN], size_t count,
				   const uint8_t root[FL_HASH_LEN], uint64_t *rng)
{
	const uint8_t *leaf = fx->leaf_hashes[leaf_index];
	const uint8_t(*proof)[FL_HASH_LEN] = (const uint8_t(*)[FL_HASH_LEN])hashes;
	uint8_t changed[FL_MERKLE_MAX_PROOF + 1][FL_HASH_LEN];
	uint8_t bad[FL_HASH_LEN];

	CHECK(fl_merkle_verify_inclusion(leaf, leaf_index, tree_size, proof, count, root),
	      "inclusion %lu in %lu does not verify", (unsigned long)leaf_index,
	      (unsigned long)tree_size);

	/* Every bit of each hash's first byte, and three random bits of each. */
	for (size_t i = 0; i < count; i++) {
		for (unsigned flip = 0; flip < 11; flip++) {
			size_t byte = flip < 8 ? 0 : rng_next(rng) % FL_HASH_LEN;
			unsigned bit = flip < 8 ? flip : rng_next(rng) % 8;

			hashes[i][byte] ^= (uint8_t)(1u << bit);
			CHECK(!fl_merkle_verify_inclusion(leaf, leaf_index, tree_size, proof, count,
							  root),
			      "inclusion %lu in %lu: flipped hash %zu byte %zu bit %u verifies",
			      (unsigned long)leaf_index, (unsigned long)tree_size, i, byte, bit);
			hashes[i][byte] ^= (uint8_t)(1u << bit);
		}
	}
	memcpy(bad, leaf, FL_HASH_LEN);
	bad[rng_next(rng) % FL_HASH_LEN] ^= 0x10;
	CHECK(!fl_merkle_verify_inclusion(bad, leaf_index, tree_size, proof, count, root),
	      "flipped leaf verifies");
	memcpy(bad, root, FL_HASH_LEN);
	bad[rng_next(rng) % FL_HASH_LEN] ^= 0x01;
	CHECK(!fl_merkle_verify_inclusion(leaf, leaf_index, tree_size, proof, count, bad),
	      "flipped root verifies");

	/* One hash dropped, anywhere. */
	for (size_t drop = 0; drop < count; drop++) {
		memcpy(changed, hashes, drop * FL_HASH_LEN);
		memcpy(changed[drop], hashes[drop + 1], (count - drop - 1) * FL_HASH_LEN);
		CHECK(!fl_merkle_verify_inclusion(leaf, leaf_index, tree_size,
						  (const uint8_t(*)[FL_HASH_LEN])changed, count - 1,
						  root),
		      "inclusion %lu in %lu verifies without hash %zu", (unsigned long)leaf_index,
		      (unsigned long)tree_size, drop);
	}
	/* One hash added, at the end (the root, or the last hash again) or the front. */
	memcpy(changed, hashes, count * FL_HASH_LEN);
	memcpy(changed[count], root, FL_HASH_LEN);
	CHECK(!fl_merkle_verify_inclusion(leaf, leaf_index, tree_size,
					  (const uint8_t(*)[FL_HASH_LEN])changed, count + 1, root),
	      "inclusion %lu in %lu verifies with a trailing root", (unsigned long)leaf_index,
	      (unsigned long)tree_size);
	if (count > 0) {
		memcpy(changed[count], hashes[count - 1], FL_HASH_LEN);
		CHECK(!fl_merkle_verify_inclusion(leaf, leaf_index, tree_size,
						  (const uint8_t(*)[FL_HASH_LEN])changed, count + 1,
						  root),
		      "verifies with the last hash repeated");
	}
	memcpy(changed[0], leaf, FL_HASH_LEN);
	memcpy(changed[1], hashes, count * FL_HASH_LEN);
	CHECK(!fl_merkle_verify_inclusion(leaf, leaf_index, tree_size,
					  (const uint8_t(*)[FL_HASH_LEN])changed, count + 1, root),
	      "inclusion %lu in %lu verifies with a leading hash", (unsigned long)leaf_index,
	      (unsigned long)tree_size);

	/* Every other leaf index, including ones past the end. */
	for (uint64_t other = 0; other < tree_size + 2; other++) {
		if (other == leaf_index)
			continue;
		CHECK(!fl_merkle_verify_inclusion(leaf, other, tree_size, proof, count, root),
		      "inclusion %lu in %lu verifies as index %lu", (unsigned long)leaf_index,
		      (unsigned long)tree_size, (unsigned long)other);
	}
	CHECK(!fl_merkle_verify_inclusion(leaf, UINT64_MAX, tree_size, proof, count, root),
	      "index UINT64_MAX verifies");

	/* Every other tree size: exactly what the oracle accepts; twice and half never. */
	for (uint64_t other = 0; other <= 2 * MAX_LEAVES + 1; other++) {
		bool expected, verified;

		if (other == tree_size)
			continue;
		expected = oracle_inclusion(leaf, leaf_index, other, proof, count, root);
		verified = fl_merkle_verify_inclusion(leaf, leaf_index, other, proof, count, root);
		CHECK(verified == expected, "inclusion %lu in %lu as size %lu: %d, oracle %d",
		      (unsigned long)leaf_index, (unsigned long)tree_size, (unsigned long)other,
		      verified, expected);
		CHECK(!verified || (other != 2 * tree_size && other != tree_size / 2),
		      "inclusion %lu in %lu verifies as size %lu", (unsigned long)leaf_index,
		      (unsigned long)tree_size, (unsigned long)other);
	}
	CHECK(!fl_merkle_verify_inclusion(leaf, leaf_index, UINT64_MAX, proof, count, root),
	      "size UINT64_MAX verifies");
}

Test(merkle, every_inclusion_proof_up_to_64_leaves, .timeout = 120)
{
	struct fixture fx;
	uint64_t rng = 0x9E3779B97F4A7C15ULL;

	fixture_init(&fx, 1);
	for (uint64_t tree_size = 1; tree_size <= MAX_LEAVES; tree_size++) {
		uint8_t root[FL_HASH_LEN], expected_root[FL_HASH_LEN];

		fixture_grow(&fx);
		fixture_root(&fx, tree_size, expected_root);
		cr_assert_eq(fl_merkle_root(store_get, &fx.store, tree_size, root), FL_OK);
		cr_assert_eq(memcmp(root, expected_root, FL_HASH_LEN), 0, "root of %lu",
			     (unsigned long)tree_size);
		fl_merkle_frontier_root(&fx.frontier, root);
		cr_assert_eq(memcmp(root, expected_root, FL_HASH_LEN), 0, "frontier root of %lu",
			     (unsigned long)tree_size);

		for (uint64_t leaf_index = 0; leaf_index < tree_size; leaf_index++) {
			uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
			struct range ranges[FL_MERKLE_MAX_PROOF];
			size_t count = 0, expected_count;

			fx.store.get_calls = 0;
			cr_assert_eq(fl_merkle_inclusion_proof(store_get, &fx.store, leaf_index,
							       tree_size, hashes, &count),
				     FL_OK);
			/* Hash for hash the RFC's PATH, so the length is the RFC's. */
			expected_count = ref_path(leaf_index, 0, tree_size, ranges);
			cr_assert_eq(count, expected_count, "inclusion %lu in %lu: %zu hashes",
				     (unsigned long)leaf_index, (unsigned long)tree_size, count);
			cr_assert_leq(count, ceil_log2(tree_size));
			for (size_t i = 0; i < count; i++) {
				uint8_t expected[FL_HASH_LEN];

				ref_mth((const uint8_t(*)[FL_HASH_LEN])fx.leaf_hashes,
					ranges[i].begin, ranges[i].end, expected);
				cr_assert_eq(memcmp(hashes[i], expected, FL_HASH_LEN), 0,
					     "inclusion %lu in %lu: hash %zu",
					     (unsigned long)leaf_index, (unsigned long)tree_size,
					     i);
			}
			/* One lookup per hash, plus the rest of the one incomplete sibling. */
			cr_assert_leq(fx.store.get_calls, count + popcount(tree_size) - 1);
			check_inclusion_probes(&fx, leaf_index, tree_size, hashes, count, root,
					       &rng);
		}
	}
}

/*
 * As check_inclusion_probes, for consistency proofs: corruptions fail; other
 * sizes agree with the oracle (RFC 9162 verification accepts, e.g., the proof
 * from 4 to 5 leaves as one from 4 to 6, 7 or 8 against the same roots).
 */
static void check_consistency_probes(uint64_t first, uint64_t second, uint8_t hashes[][FL_HASH_LEN],
				     size_t count, const uint8_t first_root[FL_HASH_LEN],
				     const uint8_t second_root[FL_HASH_LEN], uint64_t *rng)
{
	const uint8_t(*proof)[FL_HASH_LEN] = (const uint8_t(*)[FL_HASH_LEN])hashes;
	uint8_t changed[FL_MERKLE_MAX_PROOF + 1][FL_HASH_LEN];
	uint8_t bad[FL_HASH_LEN];

	CHECK(fl_merkle_verify_consistency(first, second, first_root, second_root, proof, count),
	      "consistency %lu to %lu does not verify", (unsigned long)first,
	      (unsigned long)second);

	for (size_t i = 0; i < count; i++) {
		for (unsigned flip = 0; flip < 11; flip++) {
			size_t byte = flip < 8 ? 0 : rng_next(rng) % FL_HASH_LEN;
			unsigned bit = flip < 8 ? flip : rng_next(rng) % 8;

			hashes[i][byte] ^= (uint8_t)(1u << bit);
			CHECK(!fl_merkle_verify_consistency(first, second, first_root, second_root,
							    proof, count),
			      "consistency %lu to %lu: flipped hash %zu byte %zu bit %u verifies",
			      (unsigned long)first, (unsigned long)second, i, byte, bit);
			hashes[i][byte] ^= (uint8_t)(1u << bit);
		}
	}
	memcpy(bad, first_root, FL_HASH_LEN);
	bad[rng_next(rng) % FL_HASH_LEN] ^= 0x80;
	CHECK(!fl_merkle_verify_consistency(first, second, bad, second_root, proof, count),
	      "consistency %lu to %lu: flipped first root verifies", (unsigned long)first,
	      (unsigned long)second);
	memcpy(bad, second_root, FL_HASH_LEN);
	bad[rng_next(rng) % FL_HASH_LEN] ^= 0x02;
	CHECK(!fl_merkle_verify_consistency(first, second, first_root, bad, proof, count),
	      "consistency %lu to %lu: flipped second root verifies", (unsigned long)first,
	      (unsigned long)second);

	for (size_t drop = 0; drop < count; drop++) {
		memcpy(changed, hashes, drop * FL_HASH_LEN);
		memcpy(changed[drop], hashes[drop + 1], (count - drop - 1) * FL_HASH_LEN);
		CHECK(!fl_merkle_verify_consistency(first, second, first_root, second_root,
						    (const uint8_t(*)[FL_HASH_LEN])changed,
						    count - 1),
		      "consistency %lu to %lu verifies without hash %zu", (unsigned long)first,
		      (unsigned long)second, drop);
	}
	memcpy(changed, hashes, count * FL_HASH_LEN);
	memcpy(changed[count], second_root, FL_HASH_LEN);
	CHECK(!fl_merkle_verify_consistency(first, second, first_root, second_root,
					    (const uint8_t(*)[FL_HASH_LEN])changed, count + 1),
	      "consistency %lu to %lu verifies with a trailing root", (unsigned long)first,
	      (unsigned long)second);
	if (count > 0) {
		memcpy(changed[count], hashes[count - 1], FL_HASH_LEN);
		CHECK(!fl_merkle_verify_consistency(first, second, first_root, second_root,
						    (const uint8_t(*)[FL_HASH_LEN])changed,
						    count + 1),
		      "consistency %lu to %lu verifies with the last hash repeated",
		      (unsigned long)first, (unsigned long)second);
	}
	/* The first root in front: what a proof that already did step 2 looks like. */
	memcpy(changed[0], first_root, FL_HASH_LEN);
	memcpy(changed[1], hashes, count * FL_HASH_LEN);
	CHECK(!fl_merkle_verify_consistency(first, second, first_root, second_root,
					    (const uint8_t(*)[FL_HASH_LEN])changed, count + 1),
	      "consistency %lu to %lu verifies with the first root prepended", (unsigned long)first,
	      (unsigned long)second);

	/* Other first sizes, then other second sizes, against the oracle. */
	for (uint64_t other = 0; other <= second + 1; other++) {
		bool expected, verified;

		if (other == first)
			continue;
		expected = oracle_consistency(other, second, first_root, second_root, proof, count);
		verified = fl_merkle_verify_consistency(other, second, first_root, second_root,
							proof, count);
		CHECK(verified == expected, "consistency %lu to %lu as first %lu: %d, oracle %d",
		      (unsigned long)first, (unsigned long)second, (unsigned long)other, verified,
		      expected);
	}
	for (uint64_t other = first > 0 ? first - 1 : 0; other <= 2 * MAX_LEAVES + 1; other++) {
		bool expected, verified;

		if (other == second)
			continue;
		expected = oracle_consistency(first, other, first_root, second_root, proof, count);
		verified = fl_merkle_verify_consistency(first, other, first_root, second_root,
							proof, count);
		CHECK(verified == expected, "consistency %lu to %lu as second %lu: %d, oracle %d",
		      (unsigned long)first, (unsigned long)second, (unsigned long)other, verified,
		      expected);
		CHECK(!verified || first == second || other != 2 * second,
		      "consistency %lu to %lu verifies as second %lu", (unsigned long)first,
		      (unsigned long)second, (unsigned long)other);
	}
	CHECK(
	    !fl_merkle_verify_consistency(first, UINT64_MAX, first_root, second_root, proof, count),
	    "second UINT64_MAX verifies");
}

Test(merkle, every_consistency_proof_up_to_64_leaves, .timeout = 120)
{
	struct fixture fx;
	uint8_t roots[MAX_LEAVES + 1][FL_HASH_LEN];
	uint64_t rng = 0xD1B54A32D192ED03ULL;

	fixture_init(&fx, 2);
	for (uint64_t second = 1; second <= MAX_LEAVES; second++) {
		fixture_grow(&fx);
		cr_assert_eq(fl_merkle_root(store_get, &fx.store, second, roots[second]), FL_OK);
		fixture_root(&fx, second, roots[0]);
		cr_assert_eq(memcmp(roots[second], roots[0], FL_HASH_LEN), 0);

		for (uint64_t first = 1; first <= second; first++) {
			uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
			struct range ranges[FL_MERKLE_MAX_PROOF];
			size_t count = 99, expected_count;

			fx.store.get_calls = 0;
			cr_assert_eq(fl_merkle_consistency_proof(store_get, &fx.store, first,
								 second, hashes, &count),
				     FL_OK);
			expected_count = ref_subproof(first, 0, second, true, ranges);
			cr_assert_eq(count, expected_count, "consistency %lu to %lu: %zu hashes",
				     (unsigned long)first, (unsigned long)second, count);
			if (first == second)
				cr_assert_eq(count, 0);
			else
				cr_assert_leq(count, ceil_log2(second) + 1);
			for (size_t i = 0; i < count; i++) {
				uint8_t expected[FL_HASH_LEN];

				ref_mth((const uint8_t(*)[FL_HASH_LEN])fx.leaf_hashes,
					ranges[i].begin, ranges[i].end, expected);
				cr_assert_eq(memcmp(hashes[i], expected, FL_HASH_LEN), 0,
					     "consistency %lu to %lu: hash %zu",
					     (unsigned long)first, (unsigned long)second, i);
			}
			cr_assert_leq(fx.store.get_calls,
				      count == 0 ? 0 : count + popcount(second) - 1);
			check_consistency_probes(first, second, hashes, count, roots[first],
						 roots[second], &rng);
		}
	}
}

/* A few proof lengths worked out by hand from RFC 9162 §2.1.3.1 and §2.1.4.1. */
Test(merkle, proof_lengths_match_the_rfc)
{
	static const struct {
		uint64_t a, b;
		size_t inclusion, consistency;
	} cases[] = {
	    {0, 1, 0, 0},   {1, 2, 1, 1},   {2, 3, 1, 1},   {3, 4, 2, 3},  {4, 5, 1, 1},
	    {5, 7, 3, 4},   {6, 8, 3, 3},   {7, 8, 3, 4},   {4, 8, 3, 1},  {31, 32, 5, 6},
	    {32, 33, 1, 1}, {33, 64, 6, 7}, {63, 64, 6, 7}, {1, 64, 6, 6},
	};
	struct fixture fx;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;

	fixture_init(&fx, 3);
	while (fx.frontier.size < MAX_LEAVES)
		fixture_grow(&fx);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t leaf_index = cases[i].a, tree_size = cases[i].b;

		fx.store.tree_size = tree_size;
		if (leaf_index < tree_size) {
			cr_assert_eq(fl_merkle_inclusion_proof(store_get, &fx.store, leaf_index,
							       tree_size, hashes, &count),
				     FL_OK);
			cr_assert_eq(count, cases[i].inclusion, "inclusion %lu in %lu",
				     (unsigned long)leaf_index, (unsigned long)tree_size);
		}
		if (leaf_index > 0) {
			cr_assert_eq(fl_merkle_consistency_proof(store_get, &fx.store, leaf_index,
								 tree_size, hashes, &count),
				     FL_OK);
			cr_assert_eq(count, cases[i].consistency, "consistency %lu to %lu",
				     (unsigned long)leaf_index, (unsigned long)tree_size);
		}
	}
}

/*
 * A tree of 2^64 - 1 equal leaves: node (L, i) is the same hash for every i,
 * so the store needs one hash per level and proofs at the edge of 64-bit
 * arithmetic can be checked (equal leaves make index probes meaningless).
 */
struct uniform_store {
	uint8_t levels[64][FL_HASH_LEN];
	uint64_t tree_size;
	unsigned get_calls;
};

static enum fl_status uniform_get(void *ctx, unsigned level, uint64_t index,
				  uint8_t ret_hash[FL_HASH_LEN])
{
	struct uniform_store *store = ctx;

	store->get_calls++;
	if (level >= 64 || index >= (store->tree_size >> level))
		return FL_ERR_NOT_FOUND;
	memcpy(ret_hash, store->levels[level], FL_HASH_LEN);
	return FL_OK;
}

Test(merkle, huge_trees_stay_logarithmic)
{
	static const uint64_t sizes[] = {
	    1000000,	       (uint64_t)1 << 20,	((uint64_t)1 << 32) + 1,
	    (uint64_t)1 << 63, ((uint64_t)1 << 63) + 1, UINT64_MAX - 1,
	    UINT64_MAX,
	};
	struct uniform_store store;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	uint8_t root[FL_HASH_LEN], first_root[FL_HASH_LEN];
	struct range ranges[FL_MERKLE_MAX_PROOF];
	size_t count;

	fl_merkle_leaf_hash((const uint8_t *)"event", 5, store.levels[0]);
	for (unsigned level = 1; level < 64; level++)
		fl_merkle_node_hash(store.levels[level - 1], store.levels[level - 1],
				    store.levels[level]);
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		uint64_t tree_size = sizes[s];
		uint64_t probes[] = {0, 1, 2, 3, tree_size / 2, tree_size - 2, tree_size - 1};

		store.tree_size = tree_size;
		store.get_calls = 0;
		cr_assert_eq(fl_merkle_root(uniform_get, &store, tree_size, root), FL_OK);
		cr_assert_eq(store.get_calls, popcount(tree_size));
		for (size_t p = 0; p < sizeof(probes) / sizeof(probes[0]); p++) {
			uint64_t leaf_index = probes[p];

			store.get_calls = 0;
			cr_assert_eq(fl_merkle_inclusion_proof(uniform_get, &store, leaf_index,
							       tree_size, hashes, &count),
				     FL_OK);
			cr_assert_eq(count, ref_path(leaf_index, 0, tree_size, ranges));
			cr_assert_leq(count, 64);
			cr_assert_leq(store.get_calls, count + popcount(tree_size) - 1);
			cr_assert(fl_merkle_verify_inclusion(store.levels[0], leaf_index, tree_size,
							     (const uint8_t(*)[FL_HASH_LEN])hashes,
							     count, root),
				  "inclusion %lu in %lu", (unsigned long)leaf_index,
				  (unsigned long)tree_size);

			if (leaf_index == 0)
				continue;
			store.get_calls = 0;
			cr_assert_eq(fl_merkle_consistency_proof(uniform_get, &store, leaf_index,
								 tree_size, hashes, &count),
				     FL_OK);
			cr_assert_eq(count, ref_subproof(leaf_index, 0, tree_size, true, ranges));
			cr_assert_leq(store.get_calls, count + popcount(tree_size) - 1);
			cr_assert_eq(fl_merkle_root(uniform_get, &store, leaf_index, first_root),
				     FL_OK);
			cr_assert(fl_merkle_verify_consistency(
				      leaf_index, tree_size, first_root, root,
				      (const uint8_t(*)[FL_HASH_LEN])hashes, count),
				  "consistency %lu to %lu", (unsigned long)leaf_index,
				  (unsigned long)tree_size);
		}
	}
	/* The longest proof there is: FL_MERKLE_MAX_PROOF must hold it. */
	store.tree_size = UINT64_MAX;
	cr_assert_eq(
	    fl_merkle_consistency_proof(uniform_get, &store, 3, UINT64_MAX, hashes, &count), FL_OK);
	cr_assert_eq(count, 65);
	cr_assert_eq(count, FL_MERKLE_MAX_PROOF);
	cr_assert_eq(fl_merkle_root(uniform_get, &store, 3, first_root), FL_OK);
	cr_assert_eq(fl_merkle_root(uniform_get, &store, UINT64_MAX, root), FL_OK);
	cr_assert(fl_merkle_verify_consistency(3, UINT64_MAX, first_root, root,
					       (const uint8_t(*)[FL_HASH_LEN])hashes, count));
	cr_assert(!fl_merkle_verify_consistency(3, UINT64_MAX, first_root, root,
						(const uint8_t(*)[FL_HASH_LEN])hashes, count - 1));
}

/*
 * Every lookup of a root or proof in turn fails; the status comes back
 * unchanged and the outputs stay untouched.
 */
Test(merkle, node_errors_propagate)
{
	static const enum fl_status statuses[] = {FL_ERR_IO, FL_ERR_CORRUPT, FL_ERR_NOT_FOUND};
	struct fixture fx;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	uint8_t root[FL_HASH_LEN];
	size_t count;
	unsigned calls;

	fixture_init(&fx, 4);
	while (fx.frontier.size < 45)
		fixture_grow(&fx);
	for (size_t s = 0; s < sizeof(statuses) / sizeof(statuses[0]); s++) {
		fx.store.fail_status = statuses[s];

		fx.store.fail_get_at = 0;
		fx.store.get_calls = 0;
		cr_assert_eq(fl_merkle_root(store_get, &fx.store, 45, root), FL_OK);
		calls = fx.store.get_calls;
		cr_assert_eq(calls, 4); /* 45 = 32 + 8 + 4 + 1 */
		for (unsigned fail_at = 1; fail_at <= calls; fail_at++) {
			memset(root, 0xAA, sizeof(root));
			fx.store.fail_get_at = fail_at;
			fx.store.get_calls = 0;
			cr_assert_eq(fl_merkle_root(store_get, &fx.store, 45, root), statuses[s]);
			cr_assert_eq(fx.store.get_calls, fail_at,
				     "lookups went on after a failure");
			for (size_t i = 0; i < FL_HASH_LEN; i++)
				cr_assert_eq(root[i], 0xAA);
		}

		fx.store.fail_get_at = 0;
		fx.store.get_calls = 0;
		cr_assert_eq(
		    fl_merkle_inclusion_proof(store_get, &fx.store, 33, 45, hashes, &count), FL_OK);
		calls = fx.store.get_calls;
		cr_assert_gt(calls, count, "leaf 33 of 45 needs an incomplete sibling");
		for (unsigned fail_at = 1; fail_at <= calls; fail_at++) {
			count = 1234;
			fx.store.fail_get_at = fail_at;
			fx.store.get_calls = 0;
			cr_assert_eq(
			    fl_merkle_inclusion_proof(store_get, &fx.store, 33, 45, hashes, &count),
			    statuses[s]);
			cr_assert_eq(fx.store.get_calls, fail_at);
			cr_assert_eq(count, 1234);
		}

		fx.store.fail_get_at = 0;
		fx.store.get_calls = 0;
		cr_assert_eq(
		    fl_merkle_consistency_proof(store_get, &fx.store, 7, 45, hashes, &count),
		    FL_OK);
		calls = fx.store.get_calls;
		cr_assert_gt(calls, count);
		for (unsigned fail_at = 1; fail_at <= calls; fail_at++) {
			count = 1234;
			fx.store.fail_get_at = fail_at;
			fx.store.get_calls = 0;
			cr_assert_eq(fl_merkle_consistency_proof(store_get, &fx.store, 7, 45,
								 hashes, &count),
				     statuses[s]);
			cr_assert_eq(fx.store.get_calls, fail_at);
			cr_assert_eq(count, 1234);
		}
	}
}

Test(merkle, invalid_arguments_are_refused)
{
	struct fixture fx;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	const uint8_t(*proof)[FL_HASH_LEN] = (const uint8_t(*)[FL_HASH_LEN])hashes;
	uint8_t root[FL_HASH_LEN], one_root[FL_HASH_LEN];
	struct fl_merkle_frontier frontier;
	size_t count = 1234;

	fixture_init(&fx, 5);
	for (int i = 0; i < 8; i++)
		fixture_grow(&fx);
	cr_assert_eq(fl_merkle_root(store_get, &fx.store, 8, root), FL_OK);
	cr_assert_eq(fl_merkle_root(store_get, &fx.store, 1, one_root), FL_OK);

	cr_assert_eq(fl_merkle_root(NULL, NULL, 8, root), FL_ERR_INVALID);
	cr_assert_eq(fl_merkle_root(store_get, &fx.store, 8, NULL), FL_ERR_INVALID);

	cr_assert_eq(fl_merkle_inclusion_proof(store_get, &fx.store, 8, 8, hashes, &count),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_merkle_inclusion_proof(store_get, &fx.store, 0, 0, hashes, &count),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_merkle_inclusion_proof(NULL, NULL, 0, 8, hashes, &count), FL_ERR_INVALID);
	cr_assert_eq(fl_merkle_inclusion_proof(store_get, &fx.store, 0, 8, NULL, &count),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_merkle_inclusion_proof(store_get, &fx.store, 0, 8, hashes, NULL),
		     FL_ERR_INVALID);

	cr_assert_eq(fl_merkle_consistency_proof(store_get, &fx.store, 0, 8, hashes, &count),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_merkle_consistency_proof(store_get, &fx.store, 0, 0, hashes, &count),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_merkle_consistency_proof(store_get, &fx.store, 5, 4, hashes, &count),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_merkle_consistency_proof(NULL, NULL, 1, 8, hashes, &count), FL_ERR_INVALID);
	cr_assert_eq(fl_merkle_consistency_proof(store_get, &fx.store, 1, 8, hashes, NULL),
		     FL_ERR_INVALID);
	cr_assert_eq(count, 1234, "a refused call wrote its output");

	/* first == second: the empty proof, and only with equal roots. */
	cr_assert_eq(fl_merkle_consistency_proof(store_get, &fx.store, 8, 8, hashes, &count),
		     FL_OK);
	cr_assert_eq(count, 0);
	cr_assert(fl_merkle_verify_consistency(8, 8, root, root, proof, 0));
	cr_assert(!fl_merkle_verify_consistency(8, 8, root, one_root, proof, 0));
	memcpy(hashes[0], root, FL_HASH_LEN);
	cr_assert(!fl_merkle_verify_consistency(8, 8, root, root, proof, 1));

	/* first == 0 is refused even where RFC 9162 would accept anything. */
	cr_assert(!fl_merkle_verify_consistency(0, 8, root, root, proof, 0));
	cr_assert(!fl_merkle_verify_consistency(0, 0, root, root, proof, 0));
	cr_assert(!fl_merkle_verify_consistency(8, 1, root, one_root, proof, 0));
	/* An empty proof never shows first < second. */
	cr_assert(!fl_merkle_verify_consistency(1, 8, one_root, root, proof, 0));
	/* ... and must not look at hashes[0] when first is not a power of two. */
	cr_assert(!fl_merkle_verify_consistency(3, 8, one_root, root, NULL, 0));
	cr_assert(!fl_merkle_verify_consistency(1, 8, one_root, root, NULL, 3));
	cr_assert(!fl_merkle_verify_consistency(1, 8, NULL, root, proof, 3));

	/* Inclusion in a tree of one leaf: the empty proof and root == leaf. */
	cr_assert(fl_merkle_verify_inclusion(fx.leaf_hashes[0], 0, 1, proof, 0, one_root));
	cr_assert(!fl_merkle_verify_inclusion(fx.leaf_hashes[1], 0, 1, proof, 0, one_root));
	cr_assert(!fl_merkle_verify_inclusion(fx.leaf_hashes[0], 0, 0, proof, 0, one_root));
	cr_assert(!fl_merkle_verify_inclusion(fx.leaf_hashes[0], 1, 1, proof, 0, one_root));
	cr_assert(!fl_merkle_verify_inclusion(NULL, 0, 1, proof, 0, one_root));
	cr_assert(!fl_merkle_verify_inclusion(fx.leaf_hashes[0], 0, 8, NULL, 3, root));
	cr_assert(!fl_merkle_verify_inclusion(fx.leaf_hashes[0], 0, 8, proof,
					      FL_MERKLE_MAX_PROOF + 1, root));

	cr_assert_eq(fl_merkle_frontier_append(NULL, root, NULL, NULL), FL_ERR_INVALID);
	cr_assert_eq(fl_merkle_frontier_append(&fx.frontier, NULL, NULL, NULL), FL_ERR_INVALID);
	/* A full tree cannot grow: there is no 65th level to carry into. */
	fl_merkle_frontier_init(&frontier);
	frontier.size = UINT64_MAX;
	cr_assert_eq(fl_merkle_frontier_append(&frontier, root, NULL, NULL), FL_ERR_FULL);
	cr_assert_eq(frontier.size, UINT64_MAX);
}

/* The frontier is a plain value: a copy is a snapshot, assigning it back a rollback. */
Test(merkle, frontier_snapshot_and_rollback)
{
	struct fixture fx;
	struct fl_merkle_frontier snapshot, other;
	uint8_t root[FL_HASH_LEN], expected[FL_HASH_LEN];

	fixture_init(&fx, 6);
	for (int i = 0; i < 11; i++)
		fixture_grow(&fx);
	snapshot = fx.frontier;
	for (int i = 0; i < 9; i++)
		cr_assert_eq(
		    fl_merkle_frontier_append(&fx.frontier, fx.leaf_hashes[11 + i], NULL, NULL),
		    FL_OK);
	fl_merkle_frontier_root(&fx.frontier, root);
	fixture_root(&fx, 20, expected);
	cr_assert_eq(memcmp(root, expected, FL_HASH_LEN), 0);
	fx.frontier = snapshot;
	fl_merkle_frontier_root(&fx.frontier, root);
	fixture_root(&fx, 11, expected);
	cr_assert_eq(memcmp(root, expected, FL_HASH_LEN), 0);
	/* Growing the restored frontier again gives the same tree as before. */
	other = snapshot;
	for (int i = 0; i < 9; i++)
		cr_assert_eq(fl_merkle_frontier_append(&other, fx.leaf_hashes[11 + i], NULL, NULL),
			     FL_OK);
	fl_merkle_frontier_root(&other, root);
	fixture_root(&fx, 20, expected);
	cr_assert_eq(memcmp(root, expected, FL_HASH_LEN), 0);
}
