#ifndef EVENTLOG_MERKLE_H
#define EVENTLOG_MERKLE_H

/*
 * RFC 6962 / RFC 9162 Merkle trees: leaf and interior hashes, roots, inclusion
 * and consistency proofs and their verification. Pure functions: the tree's
 * stored nodes are reached through a callback, so the same code serves the
 * LMDB log, the tests and offline verifiers.
 *
 * A "complete node" (level L, index i) is the root of the perfect subtree over
 * leaves [i * 2^L, (i + 1) * 2^L); level 0 nodes are the leaf hashes.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fledger/status.h"

#define FL_HASH_LEN 32
/*
 * No proof over a 64-bit tree is longer: an inclusion proof has at most
 * ceil(log2(tree_size)) <= 64 hashes, a consistency proof at most
 * ceil(log2(second)) + 1, which is 65 once second > 2^63 (e.g. first = 3,
 * second = UINT64_MAX).
 */
#define FL_MERKLE_MAX_PROOF 65

/* SHA-256(0x00 || data): the hash of one leaf. */
void fl_merkle_leaf_hash(const uint8_t *data, size_t len, uint8_t ret_hash[FL_HASH_LEN]);

/* SHA-256(0x01 || left || right): an interior node. */
void fl_merkle_node_hash(const uint8_t left[FL_HASH_LEN], const uint8_t right[FL_HASH_LEN],
			 uint8_t ret_hash[FL_HASH_LEN]);

/*
 * Fetches the complete node (level, index) into ret_hash. Returns FL_OK, or a
 * status that the proof functions pass back unchanged.
 */
typedef enum fl_status (*fl_merkle_node_fn)(void *ctx, unsigned level, uint64_t index,
					    uint8_t ret_hash[FL_HASH_LEN]);

/* The root of the tree over the first tree_size leaves (SHA-256("") for 0). */
enum fl_status fl_merkle_root(fl_merkle_node_fn get_node, void *ctx, uint64_t tree_size,
			      uint8_t ret_root[FL_HASH_LEN]);

/*
 * The inclusion proof of leaf leaf_index in the tree of tree_size leaves
 * (RFC 9162 §2.1.3.1). Writes at most FL_MERKLE_MAX_PROOF hashes to
 * ret_hashes and their count to ret_count. FL_ERR_INVALID when
 * leaf_index >= tree_size.
 */
enum fl_status fl_merkle_inclusion_proof(fl_merkle_node_fn get_node, void *ctx, uint64_t leaf_index,
					 uint64_t tree_size, uint8_t ret_hashes[][FL_HASH_LEN],
					 size_t *ret_count);

/*
 * The consistency proof between the trees of first and second leaves
 * (RFC 9162 §2.1.4.1). FL_ERR_INVALID unless 0 < first <= second. first ==
 * second gives the empty proof.
 */
enum fl_status fl_merkle_consistency_proof(fl_merkle_node_fn get_node, void *ctx, uint64_t first,
					   uint64_t second, uint8_t ret_hashes[][FL_HASH_LEN],
					   size_t *ret_count);

/*
 * RFC 9162 §2.1.3.2: true when the proof, of exactly the right length, leads
 * from leaf_hash at leaf_index to root in a tree of tree_size leaves.
 */
bool fl_merkle_verify_inclusion(const uint8_t leaf_hash[FL_HASH_LEN], uint64_t leaf_index,
				uint64_t tree_size, const uint8_t hashes[][FL_HASH_LEN],
				size_t count, const uint8_t root[FL_HASH_LEN]);

/*
 * RFC 9162 §2.1.4.2: true when the proof, of exactly the right length, shows
 * the tree (first, first_root) is a prefix of (second, second_root).
 */
bool fl_merkle_verify_consistency(uint64_t first, uint64_t second,
				  const uint8_t first_root[FL_HASH_LEN],
				  const uint8_t second_root[FL_HASH_LEN],
				  const uint8_t hashes[][FL_HASH_LEN], size_t count);

/*
 * The right edge of a growing tree: the roots of its perfect subtrees from
 * the largest down, one for each set bit of size. Appending a leaf yields the
 * complete nodes it finishes, which the log stores. A plain value: copy it to
 * snapshot, assign it back to roll back.
 */
struct fl_merkle_frontier {
	uint64_t size;
	uint8_t nodes[64][FL_HASH_LEN]; /* nodes[L] valid when bit L of size is set */
};

/* Called for every complete node (level, index, hash) an append finishes. */
typedef enum fl_status (*fl_merkle_store_fn)(void *ctx, unsigned level, uint64_t index,
					     const uint8_t hash[FL_HASH_LEN]);

/* Starts an empty frontier. */
void fl_merkle_frontier_init(struct fl_merkle_frontier *frontier);

/*
 * Appends one leaf hash. store (may be NULL) sees the leaf itself (level 0)
 * and every interior node it completes, bottom-up. Stops at and returns the
 * first non-FL_OK status of store; the frontier is then unspecified.
 */
enum fl_status fl_merkle_frontier_append(struct fl_merkle_frontier *frontier,
					 const uint8_t leaf_hash[FL_HASH_LEN],
					 fl_merkle_store_fn store, void *ctx);

/* The root of the tree the frontier describes. */
void fl_merkle_frontier_root(const struct fl_merkle_frontier *frontier,
			     uint8_t ret_root[FL_HASH_LEN]);

#endif
