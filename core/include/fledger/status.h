#ifndef FLEDGER_STATUS_H
#define FLEDGER_STATUS_H

/*
 * The one status type of the project. Library functions that do something
 * and can fail return it (a predicate returns bool, a count or size its
 * value); MDB_*, natsStatus and errno values are mapped into it at the edge
 * where they are met, once, never handed up as ints.
 *
 * When a person needs more than the status, one of two out-parameters
 * carries the reason:
 * - a failure a client caused (bad input, a conflict) fills a
 *   struct fl_error *err, the last parameter (fledger/error.h), ready to be
 *   answered over HTTP;
 * - any other failure (a configuration, a file, the system) writes a
 *   one-line text into char *error, size_t error_size, with fl_set_error
 *   (fledger/util.h). The pair comes after the inputs and before the ret_
 *   parameters; NULL and 0 when the caller does not care. Its text means
 *   something only when the status is not FL_OK.
 */
enum fl_status {
	FL_OK = 0,
	FL_ERR_INVALID,	    /* an argument or input is malformed */
	FL_ERR_NOT_FOUND,   /* the thing asked for does not exist */
	FL_ERR_CONFLICT,    /* e.g. an idempotency key reused with another event */
	FL_ERR_FULL,	    /* the log cannot grow (map cap or disk); nothing written */
	FL_ERR_CORRUPT,	    /* stored data fails a hash, signature or proof check */
	FL_ERR_CRYPTO,	    /* OpenSSL failed, or a key is unusable */
	FL_ERR_IO,	    /* an operating-system or database error */
	FL_ERR_NOMEM,	    /* allocation failed */
	FL_ERR_DENIED,	    /* not allowed */
	FL_ERR_UNAVAILABLE, /* a dependency (NATS, a peer) cannot be reached */
	FL_ERR_TIMEOUT,	    /* a wait ran out */
};

/* A short, static, human-readable name for a status ("not found"). */
const char *fl_status_str(enum fl_status status);

/*
 * The status of a failed file operation's errno: FL_ERR_NOT_FOUND for a
 * missing file or directory, FL_ERR_DENIED without permission,
 * FL_ERR_NOMEM, FL_ERR_IO for anything else. (LMDB's codes, which include
 * errno values, have their own map, fl_status_of_mdb.)
 */
enum fl_status fl_status_of_errno(int err);

#endif
