/*
 * The data file grown ahead (eventlog/filegrow.h): zero-filled margins past
 * the bytes in use, within the limit, never over bytes a commit wrote.
 */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eventlog/filegrow.h"

#define KIB 1024u

static char path[256];
static int fd = -1;

static void setup(void)
{
	snprintf(path, sizeof(path), "%s/fl_filegrow_XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	fd = mkstemp(path);
	cr_assert_geq(fd, 0);
}

static void teardown(void)
{
	close(fd);
	unlink(path);
}

TestSuite(filegrow, .init = setup, .fini = teardown);

static uint64_t file_size(void)
{
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	return (uint64_t)st.st_size;
}

static void fill(uint64_t offset, size_t len, char byte)
{
	char *buf = malloc(len);
	memset(buf, byte, len);
	cr_assert_eq(pwrite(fd, buf, len, (off_t)offset), (ssize_t)len);
	free(buf);
}

/* True when [offset, offset + len) of the file holds only byte. */
static bool holds(uint64_t offset, size_t len, char byte)
{
	char *buf = malloc(len);
	bool same = pread(fd, buf, len, (off_t)offset) == (ssize_t)len;
	for (size_t i = 0; same && i < len; i++)
		same = buf[i] == byte;
	free(buf);
	return same;
}

/* A commit: bytes written at offset, then the thread told what is in use. */
static void commit(struct fl_filegrow *grow, uint64_t offset, size_t len, uint64_t limit)
{
	fl_filegrow_commit_begin(grow);
	fill(offset, len, 'x');
	fl_filegrow_commit_end(grow, offset + len, limit);
}

Test(filegrow, keeps_a_zero_filled_margin_past_the_bytes_in_use)
{
	struct fl_filegrow *grow;
	cr_assert_eq(fl_filegrow_start(fd, &grow), FL_OK);
	commit(grow, 0, 10000, 1u << 30);
	fl_filegrow_wait_idle(grow);
	/* At least 256 KiB past the 10,000 bytes, all zeros; the bytes kept. */
	cr_assert_geq(file_size(), 10000 + 256 * KIB);
	cr_assert(holds(0, 10000, 'x'));
	cr_assert(holds(10000, (size_t)(file_size() - 10000), 0));

	/* A commit inside the margin is not asked to grow the file again... */
	uint64_t size = file_size();
	commit(grow, 10000, 4096, 1u << 30);
	fl_filegrow_wait_idle(grow);
	cr_assert_eq(file_size(), size);
	/* ...until half of the margin is used up. */
	commit(grow, 14096, 200 * KIB, 1u << 30);
	fl_filegrow_wait_idle(grow);
	cr_assert_gt(file_size(), size);
	cr_assert(holds(14096, 200 * KIB, 'x'));
	fl_filegrow_stop(grow);
}

Test(filegrow, a_large_commit_is_not_grown_ahead)
{
	struct fl_filegrow *grow;
	cr_assert_eq(fl_filegrow_start(fd, &grow), FL_OK);
	/* A catch-up's commit: it pays for its own allocation once. */
	commit(grow, 0, 1024 * KIB, 1u << 30);
	fl_filegrow_wait_idle(grow);
	cr_assert_eq(file_size(), 1024 * KIB);
	/* The small commits after it are. */
	commit(grow, 1024 * KIB, 4096, 1u << 30);
	fl_filegrow_wait_idle(grow);
	cr_assert_gt(file_size(), 1028 * KIB);
	fl_filegrow_stop(grow);
}

Test(filegrow, stays_within_the_limit)
{
	struct fl_filegrow *grow;
	cr_assert_eq(fl_filegrow_start(fd, &grow), FL_OK);
	commit(grow, 0, 10000, 50000);
	fl_filegrow_wait_idle(grow);
	cr_assert_eq(file_size(), 50000);
	cr_assert(holds(10000, 40000, 0));
	fl_filegrow_stop(grow);
}

Test(filegrow, never_writes_over_what_a_commit_wrote_past_the_end)
{
	struct fl_filegrow *grow;
	cr_assert_eq(fl_filegrow_start(fd, &grow), FL_OK);
	for (int round = 0; round < 50; round++) {
		/* Each commit writes past the file's end, as LMDB does when the
		 * margin has run out; the thread may be mid-way through a step. */
		uint64_t end = file_size();
		commit(grow, end + 4096, 8192, 1u << 30);
		cr_assert(holds(end + 4096, 8192, 'x'), "round %d", round);
	}
	fl_filegrow_wait_idle(grow);
	fl_filegrow_stop(grow);
	/* Every commit's bytes are still there. */
	char *buf = malloc(file_size());
	cr_assert_eq(pread(fd, buf, file_size(), 0), (ssize_t)file_size());
	size_t xs = 0;
	for (uint64_t i = 0; i < file_size(); i++)
		xs += buf[i] == 'x';
	free(buf);
	cr_assert_eq(xs, 50 * 8192);
}

Test(filegrow, stop_while_growing_and_null_are_safe)
{
	struct fl_filegrow *grow;
	cr_assert_eq(fl_filegrow_start(fd, &grow), FL_OK);
	for (uint64_t used = 0; used < (8u << 20); used += 200 * KIB)
		commit(grow, used, 200 * KIB, 1ull << 40); /* up to a 2 MiB margin */
	fl_filegrow_stop(grow);
	fl_filegrow_stop(NULL);
	fl_filegrow_commit_begin(NULL);
	fl_filegrow_commit_end(NULL, 1, 2);
	fl_filegrow_wait_idle(NULL);
}
