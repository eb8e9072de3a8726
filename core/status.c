#include "fledger/status.h"

#include <errno.h>

/*
 * Returns a short, static, human-readable name for status. The switch has no
 * default case so that the compiler (-Wswitch under -Wall) points here when a
 * value is added to enum fl_status; a value outside the enum, which only a
 * bad cast can produce, gets "unknown status".
 */
const char *fl_status_str(enum fl_status status)
{
	switch (status) {
	case FL_OK:
		return "ok";
	case FL_ERR_INVALID:
		return "invalid argument";
	case FL_ERR_NOT_FOUND:
		return "not found";
	case FL_ERR_CONFLICT:
		return "conflict";
	case FL_ERR_FULL:
		return "log full";
	case FL_ERR_CORRUPT:
		return "corrupt data";
	case FL_ERR_CRYPTO:
		return "crypto error";
	case FL_ERR_IO:
		return "i/o error";
	case FL_ERR_NOMEM:
		return "out of memory";
	case FL_ERR_DENIED:
		return "denied";
	case FL_ERR_UNAVAILABLE:
		return "unavailable";
	case FL_ERR_TIMEOUT:
		return "timed out";
	}
	return "unknown status";
}

enum fl_status fl_status_of_errno(int err)
{
	switch (err) {
	case ENOENT:
	case ENOTDIR:
		return FL_ERR_NOT_FOUND;
	case EACCES:
	case EPERM:
		return FL_ERR_DENIED;
	case ENOMEM:
		return FL_ERR_NOMEM;
	default:
		return FL_ERR_IO;
	}
}
