/*
 * RFC 6962 / RFC 9162 Merkle trees over SHA-256; see merkle.h.
 *
 * Every subtree the RFC's recursions MTH, PATH and SUBPROOF visit is either a
 * complete node or a slice [begin, tree_size) of the right edge whose begin is
 * a multiple of the largest power of two not above its width. range_hash()
 * turns such a range into one stored node per set bit of its width, so a proof
 * costs O(log n) callback calls: one per proof hash, plus at most one extra
 * per set bit of tree_size for the single proof hash that covers an incomplete
 * part of the right edge.
 */

#include "eventlog/merkle.h"

#include "fledger/sha256.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* A run of leaves [begin, end) that the RFC's recursion treats as one subtree. */
struct range {
	uint64_t begin;
	uint64_t end;
};

/* The SHA-256 implementation fetched once per process (fledger/sha256.h). */
static const EVP_MD *sha256(void)
{
	return fl_sha256_md();
}

/*
 * The hashing functions cannot return an error, and a wrong hash in a
 * transparency log is worse than a crash; SHA-256 over memory fails only when
 * OpenSSL cannot allocate, so that ends the process.
 */
static void digest_failed(void)
{
	abort();
}

/* SHA-256 of the empty string: the root of the empty tree. */
static void empty_root(uint8_t ret_hash[FL_HASH_LEN])
{
	static const uint8_t nothing[1];

	if (!EVP_Digest(nothing, 0, ret_hash, NULL, sha256(), NULL))
		digest_failed();
}

/*
 * Hashes 0x00 || data. Incremental, so that the data is neither copied nor
 * limited in size. Aborts if OpenSSL fails (see digest_failed).
 */
void fl_merkle_leaf_hash(const uint8_t *data, size_t len, uint8_t ret_hash[FL_HASH_LEN])
{
	static const uint8_t leaf_prefix = 0x00;
	EVP_MD_CTX *md_ctx;

	assert(data != NULL || len == 0);
	assert(ret_hash != NULL);
	md_ctx = EVP_MD_CTX_new();
	if (md_ctx == NULL || !EVP_DigestInit_ex2(md_ctx, sha256(), NULL) ||
	    !EVP_DigestUpdate(md_ctx, &leaf_prefix, 1) ||
	    (len > 0 && !EVP_DigestUpdate(md_ctx, data, len)) ||
	    !EVP_DigestFinal_ex(md_ctx, ret_hash, NULL))
		digest_failed();
	EVP_MD_CTX_free(md_ctx);
}

/*
 * Hashes 0x01 || left || right. The input is copied first, so ret_hash may be
 * the same buffer as left or right; the proof code folds in place. Aborts if
 * OpenSSL fails (see digest_failed).
 */
void fl_merkle_node_hash(const uint8_t left[FL_HASH_LEN], const uint8_t right[FL_HASH_LEN],
			 uint8_t ret_hash[FL_HASH_LEN])
{
	uint8_t input[1 + 2 * FL_HASH_LEN];

	assert(left != NULL && right != NULL && ret_hash != NULL);
	input[0] = 0x01;
	memcpy(input + 1, left, FL_HASH_LEN);
	memcpy(input + 1 + FL_HASH_LEN, right, FL_HASH_LEN);
	if (!EVP_Digest(input, sizeof(input), ret_hash, NULL, sha256(), NULL))
		digest_failed();
}

/* The largest power of two strictly below width, for width >= 2: RFC 9162's k. */
static uint64_t split_width(uint64_t width)
{
	assert(width >= 2);
	return (uint64_t)1 << (63 - __builtin_clzll(width - 1));
}

/*
 * The Merkle Tree Hash of the leaves [begin, end), a range the RFC recursion
 * produces (see the top of this file). Its complete nodes, one per set bit of
 * end - begin, are fetched from the right, smallest first, and folded as
 * MTH does: each larger node on the left of what has been folded so far.
 * ret_hash is written only on success; a status of get_node is returned
 * unchanged.
 */
static enum fl_status range_hash(fl_merkle_node_fn get_node, void *ctx, uint64_t begin,
				 uint64_t end, uint8_t ret_hash[FL_HASH_LEN])
{
	uint8_t folded[FL_HASH_LEN];
	uint8_t node[FL_HASH_LEN];
	uint64_t remaining = end - begin;
	uint64_t node_begin = end;
	bool first = true;

	assert(begin < end);
	while (remaining != 0) {
		unsigned level = (unsigned)__builtin_ctzll(remaining);
		enum fl_status status;

		node_begin -= (uint64_t)1 << level;
		assert((node_begin & (((uint64_t)1 << level) - 1)) == 0);
		status = get_node(ctx, level, node_begin >> level, first ? folded : node);
		if (status != FL_OK)
			return status;
		if (!first)
			fl_merkle_node_hash(node, folded, folded);
		first = false;
		remaining &= remaining - 1;
	}
	memcpy(ret_hash, folded, FL_HASH_LEN);
	return FL_OK;
}

/*
 * Fetches the hashes of the ranges in reverse order (the walks below note
 * them root first; the RFC lists them leaf first), then copies them out, so
 * that the caller's buffers are written only on success.
 */
static enum fl_status fetch_proof(fl_merkle_node_fn get_node, void *ctx, const struct range *ranges,
				  size_t count, uint8_t ret_hashes[][FL_HASH_LEN],
				  size_t *ret_count)
{
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];

	assert(count <= FL_MERKLE_MAX_PROOF);
	for (size_t i = 0; i < count; i++) {
		const struct range *r = &ranges[count - 1 - i];
		enum fl_status status = range_hash(get_node, ctx, r->begin, r->end, hashes[i]);

		if (status != FL_OK)
			return status;
	}
	if (count > 0)
		memcpy(ret_hashes, hashes, count * FL_HASH_LEN);
	*ret_count = count;
	return FL_OK;
}

/*
 * MTH(D[0:tree_size]) from at most popcount(tree_size) stored nodes.
 * FL_ERR_INVALID for a NULL argument; otherwise FL_OK or get_node's status.
 * ret_root is written only on success.
 */
enum fl_status fl_merkle_root(fl_merkle_node_fn get_node, void *ctx, uint64_t tree_size,
			      uint8_t ret_root[FL_HASH_LEN])
{
	if (get_node == NULL || ret_root == NULL)
		return FL_ERR_INVALID;
	if (tree_size == 0) {
		empty_root(ret_root);
		return FL_OK;
	}
	return range_hash(get_node, ctx, 0, tree_size, ret_root);
}

/*
 * PATH(m, D[n]) of RFC 9162 §2.1.3.1, unrolled: walk from the root towards
 * the leaf, noting at each split the subtree on the other side, then fetch
 * those subtrees leaf first. Only the first sibling taken off the right edge
 * can be incomplete. FL_ERR_INVALID for a NULL argument or leaf_index >=
 * tree_size; otherwise FL_OK or get_node's status. The outputs are written
 * only on success.
 */
enum fl_status fl_merkle_inclusion_proof(fl_merkle_node_fn get_node, void *ctx, uint64_t leaf_index,
					 uint64_t tree_size, uint8_t ret_hashes[][FL_HASH_LEN],
					 size_t *ret_count)
{
	struct range siblings[FL_MERKLE_MAX_PROOF];
	struct range subtree = {0, tree_size};
	size_t depth = 0;

	if (get_node == NULL || ret_hashes == NULL || ret_count == NULL || leaf_index >= tree_size)
		return FL_ERR_INVALID;
	while (subtree.end - subtree.begin > 1) {
		uint64_t split = subtree.begin + split_width(subtree.end - subtree.begin);

		assert(depth < FL_MERKLE_MAX_PROOF);
		if (leaf_index < split) {
			siblings[depth++] = (struct range){split, subtree.end};
			subtree.end = split;
		} else {
			siblings[depth++] = (struct range){subtree.begin, split};
			subtree.begin = split;
		}
	}
	return fetch_proof(get_node, ctx, siblings, depth, ret_hashes, ret_count);
}

/*
 * SUBPROOF(m, D[n], true) of RFC 9162 §2.1.4.1, unrolled the same way:
 * old_size is m relative to the current subtree, whole_old_tree is the
 * recursion's boolean b (the subtree is a left spine of the old tree, whose
 * root the verifier already has). The walk stops where the old tree's edge
 * meets a subtree boundary; that subtree is always complete when
 * first < second. FL_ERR_INVALID for a NULL argument or unless
 * 0 < first <= second; otherwise FL_OK or get_node's status. The outputs are
 * written only on success.
 */
enum fl_status fl_merkle_consistency_proof(fl_merkle_node_fn get_node, void *ctx, uint64_t first,
					   uint64_t second, uint8_t ret_hashes[][FL_HASH_LEN],
					   size_t *ret_count)
{
	struct range nodes[FL_MERKLE_MAX_PROOF];
	struct range subtree = {0, second};
	uint64_t old_size = first;
	bool whole_old_tree = true;
	size_t count = 0;

	if (get_node == NULL || ret_hashes == NULL || ret_count == NULL || first == 0 ||
	    first > second)
		return FL_ERR_INVALID;
	while (old_size != subtree.end - subtree.begin) {
		uint64_t half = split_width(subtree.end - subtree.begin);

		assert(count < FL_MERKLE_MAX_PROOF);
		if (old_size <= half) {
			nodes[count++] = (struct range){subtree.begin + half, subtree.end};
			subtree.end = subtree.begin + half;
		} else {
			nodes[count++] = (struct range){subtree.begin, subtree.begin + half};
			subtree.begin += half;
			old_size -= half;
			whole_old_tree = false;
		}
	}
	if (!whole_old_tree) {
		assert(count < FL_MERKLE_MAX_PROOF);
		nodes[count++] = subtree;
	}
	return fetch_proof(get_node, ctx, nodes, count, ret_hashes, ret_count);
}

/*
 * RFC 9162 §2.1.3.2, step by step. The walk over fn and sn fixes how many
 * hashes the proof must have: one too many meets sn == 0 inside the loop, one
 * too few leaves sn > 0 at the end, and both fail.
 */
bool fl_merkle_verify_inclusion(const uint8_t leaf_hash[FL_HASH_LEN], uint64_t leaf_index,
				uint64_t tree_size, const uint8_t hashes[][FL_HASH_LEN],
				size_t count, const uint8_t root[FL_HASH_LEN])
{
	uint8_t r[FL_HASH_LEN];
	uint64_t fn, sn;

	if (leaf_hash == NULL || root == NULL || (hashes == NULL && count > 0) ||
	    count > FL_MERKLE_MAX_PROOF)
		return false;
	/* 1. leaf_index >= tree_size fails. */
	if (leaf_index >= tree_size)
		return false;
	/* 2, 3. */
	fn = leaf_index;
	sn = tree_size - 1;
	memcpy(r, leaf_hash, FL_HASH_LEN);
	/* 4. */
	for (size_t i = 0; i < count; i++) {
		if (sn == 0)
			return false;
		if ((fn & 1) != 0 || fn == sn) {
			fl_merkle_node_hash(hashes[i], r, r);
			while ((fn & 1) == 0 && fn != 0) {
				fn >>= 1;
				sn >>= 1;
			}
		} else {
			fl_merkle_node_hash(r, hashes[i], r);
		}
		fn >>= 1;
		sn >>= 1;
	}
	/* 5. */
	return sn == 0 && memcmp(r, root, FL_HASH_LEN) == 0;
}

/*
 * RFC 9162 §2.1.4.2, step by step, for 0 < first < second; first == second
 * holds exactly when the proof is empty and the roots are equal, and first ==
 * 0 is refused (merkle.h). Step 2's "prepend first_hash" is done by reading
 * the path through an offset instead of copying it. Wrong lengths fail as in
 * fl_merkle_verify_inclusion.
 */
bool fl_merkle_verify_consistency(uint64_t first, uint64_t second,
				  const uint8_t first_root[FL_HASH_LEN],
				  const uint8_t second_root[FL_HASH_LEN],
				  const uint8_t hashes[][FL_HASH_LEN], size_t count)
{
	uint8_t fr[FL_HASH_LEN], sr[FL_HASH_LEN];
	uint64_t fn, sn;
	size_t path_len;
	bool prepend;

	if (first_root == NULL || second_root == NULL || (hashes == NULL && count > 0) ||
	    count > FL_MERKLE_MAX_PROOF || first == 0 || first > second)
		return false;
	if (first == second)
		return count == 0 && memcmp(first_root, second_root, FL_HASH_LEN) == 0;
	/* 1. */
	if (count == 0)
		return false;
	/* 2. */
	prepend = (first & (first - 1)) == 0;
	path_len = count + (prepend ? 1 : 0);
	/* 3. */
	fn = first - 1;
	sn = second - 1;
	/* 4. */
	while ((fn & 1) != 0) {
		fn >>= 1;
		sn >>= 1;
	}
	/* 5. */
	memcpy(fr, prepend ? first_root : hashes[0], FL_HASH_LEN);
	memcpy(sr, fr, FL_HASH_LEN);
	/* 6. */
	for (size_t i = 1; i < path_len; i++) {
		const uint8_t *c = hashes[prepend ? i - 1 : i];

		if (sn == 0)
			return false;
		if ((fn & 1) != 0 || fn == sn) {
			fl_merkle_node_hash(c, fr, fr);
			fl_merkle_node_hash(c, sr, sr);
			while ((fn & 1) == 0 && fn != 0) {
				fn >>= 1;
				sn >>= 1;
			}
		} else {
			fl_merkle_node_hash(sr, c, sr);
		}
		fn >>= 1;
		sn >>= 1;
	}
	/* 7. */
	return sn == 0 && memcmp(fr, first_root, FL_HASH_LEN) == 0 &&
	       memcmp(sr, second_root, FL_HASH_LEN) == 0;
}

void fl_merkle_frontier_init(struct fl_merkle_frontier *frontier)
{
	assert(frontier != NULL);
	memset(frontier, 0, sizeof(*frontier));
}

/*
 * Appending leaf number size finishes one node per trailing one bit of size:
 * the leaf merges with nodes[0], the result with nodes[1], and so on, like
 * the carry of size + 1. Everything is handed to store before the frontier is
 * touched, so a failing store in fact leaves it as it was (merkle.h promises
 * less). FL_ERR_INVALID for a NULL argument, FL_ERR_FULL when the tree
 * already has UINT64_MAX leaves.
 */
enum fl_status fl_merkle_frontier_append(struct fl_merkle_frontier *frontier,
					 const uint8_t leaf_hash[FL_HASH_LEN],
					 fl_merkle_store_fn store, void *ctx)
{
	uint8_t node[FL_HASH_LEN];
	uint64_t leaf_index;
	unsigned level = 0;
	enum fl_status status;

	if (frontier == NULL || leaf_hash == NULL)
		return FL_ERR_INVALID;
	leaf_index = frontier->size;
	if (leaf_index == UINT64_MAX)
		return FL_ERR_FULL;
	if (store != NULL) {
		status = store(ctx, 0, leaf_index, leaf_hash);
		if (status != FL_OK)
			return status;
	}
	memcpy(node, leaf_hash, FL_HASH_LEN);
	while (((leaf_index >> level) & 1) != 0) {
		fl_merkle_node_hash(frontier->nodes[level], node, node);
		level++;
		if (store != NULL) {
			status = store(ctx, level, leaf_index >> level, node);
			if (status != FL_OK)
				return status;
		}
	}
	memcpy(frontier->nodes[level], node, FL_HASH_LEN);
	frontier->size = leaf_index + 1;
	return FL_OK;
}

/* Folds the perfect subtrees from the smallest (rightmost) to the largest. */
void fl_merkle_frontier_root(const struct fl_merkle_frontier *frontier,
			     uint8_t ret_root[FL_HASH_LEN])
{
	uint8_t folded[FL_HASH_LEN];
	unsigned level;

	assert(frontier != NULL && ret_root != NULL);
	if (frontier->size == 0) {
		empty_root(ret_root);
		return;
	}
	level = (unsigned)__builtin_ctzll(frontier->size);
	memcpy(folded, frontier->nodes[level], FL_HASH_LEN);
	for (level++; level < 64; level++) {
		if (((frontier->size >> level) & 1) != 0)
			fl_merkle_node_hash(frontier->nodes[level], folded, folded);
	}
	memcpy(ret_root, folded, FL_HASH_LEN);
}
