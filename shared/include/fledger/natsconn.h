#ifndef FLEDGER_NATSCONN_H
#define FLEDGER_NATSCONN_H

/*
 * How both services connect to NATS (CONTRACT §5, §8): one place that turns
 * the --nats* flags into cnats options, so that the publisher's reconnects
 * and query-svc's consumer use the same server list, credentials and TLS.
 *
 * - urls: a comma-separated list ("nats://a:4222,nats://b:4222"); every
 *   connection keeps the whole list and moves to another server when its own
 *   dies. Each URL is nats:// or tls://, a host and an optional port.
 * - TLS: switched on by a tls:// URL or by any of tls.ca_file, cert_file,
 *   key_file (--nats-ca, --nats-cert, --nats-key).
 * - Authentication, at most one kind: creds_file (a JWT + nkey .creds file,
 *   --nats-creds), nkey_file (a user nkey seed, --nats-nkey), user with
 *   password_file (--nats-user, --nats-password-file), token_file
 *   (--nats-token-file). Secrets are read from files, never from flags.
 * - Every connect, disconnect, reconnect, close and asynchronous error is
 *   logged as a structured line naming `who` and the server.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "fledger/config.h"
#include "fledger/status.h"

/* The JetStream stream and its subjects (CONTRACT §5): command-svc publishes
 * fledger.events.<view> and fledger.events._keys, query-svc consumes all. */
#define FL_STREAM_NAME "FLEDGER_EVENTS"
#define FL_SUBJECT_PREFIX "fledger.events."
#define FL_SUBJECTS FL_SUBJECT_PREFIX ">"
/* On the last message of a commit: its signed checkpoint, as the JSON of
 * GET /v1/log/checkpoint (an addition to CONTRACT §5; consumers verify it). */
#define FL_CHECKPOINT_HEADER "Fledger-Checkpoint"

struct fl_nats_tls {
	const char *ca_file;   /* PEM CA that signed the server's certificate */
	const char *cert_file; /* PEM client certificate (mutual TLS), with key_file */
	const char *key_file;
};

struct fl_nats_settings {
	const char *urls; /* comma-separated; NULL or "" means no NATS */
	struct fl_nats_tls tls;
	const char *creds_file;
	const char *nkey_file;
	const char *user;
	const char *password_file;
	const char *token_file;
};

/* Called on the library's thread when a connection is (re)established. */
typedef void (*fl_nats_connected_fn)(natsConnection *nc, void *ctx);

/*
 * What a connection's callbacks log and call. cnats runs a connection's
 * callbacks on its own thread, and may still run its disconnected and
 * closed callbacks after natsConnection_Destroy has returned, so a watch is
 * never freed: it comes from a small static pool (fl_nats_watch_get) and is
 * retired when its owner goes (fl_nats_watch_retire), after which late
 * callbacks only log.
 */
struct fl_nats_watch;

/*
 * A watch logging as component `who` (a string literal: "publisher",
 * "consumer") that calls on_connected(nc, ctx) after each (re)connect (may
 * be NULL). NULL when the pool (16 watches) is used up.
 */
struct fl_nats_watch *fl_nats_watch_get(const char *who, fl_nats_connected_fn on_connected,
					void *ctx);

/*
 * No more calls of on_connected, once this returns (one in progress is
 * waited for). Call it before freeing ctx, without holding a lock that
 * on_connected takes. Accepts NULL.
 */
void fl_nats_watch_retire(struct fl_nats_watch *watch);

/*
 * The flags both services share (after their own --nats, whose default and
 * help differ): put FL_NATS_OPTIONS in a struct fl_config_option table.
 */
#define FL_NATS_OPTIONS                                                                            \
	{"nats-ca", "FLEDGER_NATS_CA", NULL, "PEM CA of the NATS server: TLS to NATS", false},     \
	    {"nats-cert", "FLEDGER_NATS_CERT", NULL,                                               \
	     "PEM client certificate for NATS (with --nats-key)", false},                          \
	    {"nats-key", "FLEDGER_NATS_KEY", NULL, "PEM private key of --nats-cert", false},       \
	    {"nats-creds", "FLEDGER_NATS_CREDS", NULL,                                             \
	     "NATS credentials file (user JWT and nkey seed)", false},                             \
	    {"nats-nkey", "FLEDGER_NATS_NKEY", NULL, "file holding a NATS user nkey seed (SU...)", \
	     false},                                                                               \
	    {"nats-user", "FLEDGER_NATS_USER", NULL, "NATS user name (with --nats-password-file)", \
	     false},                                                                               \
	    {"nats-password-file", "FLEDGER_NATS_PASSWORD_FILE", NULL,                             \
	     "file holding the NATS password of --nats-user", false},                              \
	{                                                                                          \
		"nats-token-file", "FLEDGER_NATS_TOKEN_FILE", NULL,                                \
		    "file holding a NATS authentication token", false                              \
	}

/* The settings named by --nats and FL_NATS_OPTIONS (strings owned by config). */
void fl_nats_settings_from_config(const struct fl_config *config,
				  struct fl_nats_settings *ret_settings);

/* The most URLs --nats may list. */
#define FL_NATS_MAX_URLS 32

/*
 * Checks the settings before anything connects: every URL parses, the
 * authentication kinds are not mixed, files can be read, a client certificate
 * comes with its key, an nkey seed is a user seed. FL_ERR_INVALID with a
 * one-line message naming the culprit in error.
 */
enum fl_status fl_nats_settings_check(const struct fl_nats_settings *settings, char *error,
				      size_t error_size);

/* Whether the settings or the URLs ask for TLS. */
bool fl_nats_tls_wanted(const struct fl_nats_settings *settings);

/*
 * Options for a connection: the server list, reconnecting for ever every
 * reconnect_wait_ms, connecting in the background when no server answers
 * yet, the authentication, TLS, and the watch's logging callbacks. The
 * caller destroys *ret_opts.
 */
natsStatus fl_nats_options_create(const struct fl_nats_settings *settings,
				  struct fl_nats_watch *watch, int reconnect_wait_ms,
				  natsOptions **ret_opts);

/*
 * Logs "NATS connected" with the server: for a connection that came up at
 * once (the watch logs those that come up later, and every reconnect).
 */
void fl_nats_watch_connected(struct fl_nats_watch *watch, natsConnection *nc);

/*
 * The public key of an nkey user seed ("SU…" → "U…", 56 characters + NUL in
 * ret_public). FL_ERR_INVALID when seed is not a valid user seed.
 */
enum fl_status fl_nats_nkey_public(const char *seed, char ret_public[57]);

#endif
