/*
 * A data file kept grown ahead of its writer, in zero-filled blocks.
 *
 * On ext4, fdatasync of a write that lands past the end of a file (or in a
 * hole, or in an fallocate()d extent) also commits the block allocation to
 * the journal: on this project's machines 0.23 ms against 0.125 ms for the
 * same write into blocks already written. LMDB appends its new pages past
 * the end of data.mdb, so every synced commit paid that. While commits are
 * small (the latency-bound case: a group of writes or of read records), a
 * background thread keeps a margin of zeros, already synced, past the last
 * page LMDB uses (a quarter of the file, from 256 KiB to 4 MiB); a large
 * commit (a catch-up) pays for its own allocation once, as zeros written
 * ahead of it would double its writes. LMDB only ever reads pages below
 * its meta page's last_pgno, so zeros past it are never read as data.
 *
 * The thread only writes at or past the file's size as fstat() reports it,
 * while it holds the lock that fl_filegrow_commit_begin() takes: every
 * write of the LMDB writer happens inside mdb_txn_commit() (no MDB_WRITEMAP),
 * which the caller brackets with begin/end, so the two never write the same
 * bytes.
 */
#ifndef FLEDGER_EVENTLOG_FILEGROW_H
#define FLEDGER_EVENTLOG_FILEGROW_H

#include <stdint.h>

#include "fledger/status.h"

struct fl_filegrow;

/* Starts the thread for fd (not owned; it must outlive fl_filegrow_stop). */
enum fl_status fl_filegrow_start(int fd, struct fl_filegrow **ret_grow);

/* Stops and joins the thread. NULL is a no-op. */
void fl_filegrow_stop(struct fl_filegrow *grow);

/* Brackets a commit: no zero-filling runs in between. */
void fl_filegrow_commit_begin(struct fl_filegrow *grow);

/*
 * Ends the bracket. used_bytes: the end of the last page in use after the
 * commit; limit_bytes: the file never grows past it (the map size). Wakes
 * the thread when the margin past used_bytes has run low.
 */
void fl_filegrow_commit_end(struct fl_filegrow *grow, uint64_t used_bytes, uint64_t limit_bytes);

/* Waits until the margin asked for is written and synced (or failed). */
void fl_filegrow_wait_idle(struct fl_filegrow *grow);

#endif
