/*
 * The HTTP/1.1 client (see httpc.h): getaddrinfo, a non-blocking connect, a
 * request written and an answer read under one deadline kept with poll(),
 * then the answer is parsed once the server has sent all of it.
 */
#include "fledger/httpc.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fledger/util.h"

#define HEADER_MAX (64 * 1024)

/* Waits until fd is ready for events, or until the monotonic deadline. */
static enum fl_status wait_fd(int fd, short events, int64_t deadline_us)
{
	for (;;) {
		int64_t left_ms = (deadline_us - fl_time_mono_us() + 999) / 1000;
		struct pollfd pfd = {.fd = fd, .events = events};
		if (left_ms <= 0)
			return FL_ERR_TIMEOUT;
		int rc = poll(&pfd, 1, left_ms > INT_MAX ? INT_MAX : (int)left_ms);
		if (rc > 0)
			return FL_OK;
		if (rc < 0 && errno != EINTR)
			return FL_ERR_UNAVAILABLE;
	}
}

/* Connects to the first address of host:port that accepts. */
static enum fl_status dial(const char *host, const char *port, int64_t deadline_us, int *ret_fd)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *list, *ai;
	enum fl_status st = FL_ERR_UNAVAILABLE;

	if (getaddrinfo(host, port, &hints, &list) != 0)
		return FL_ERR_UNAVAILABLE;
	for (ai = list; ai && st != FL_ERR_TIMEOUT; ai = ai->ai_next) {
		int err = 0,
		    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		socklen_t err_len = sizeof(err);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			st = FL_OK;
		else if (errno != EINPROGRESS)
			st = FL_ERR_UNAVAILABLE;
		else if ((st = wait_fd(fd, POLLOUT, deadline_us)) == FL_OK &&
			 (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) != 0 || err != 0))
			st = FL_ERR_UNAVAILABLE;
		if (st == FL_OK) {
			*ret_fd = fd;
			break;
		}
		close(fd);
	}
	freeaddrinfo(list);
	return st;
}

/* True when every byte of text lies in [lo, 0x7e]. */
static bool printable(const char *text, unsigned char lo)
{
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		if (*p < lo || *p > 0x7e)
			return false;
	return true;
}

/* Decodes a chunked body in place; false when it is malformed or cut short. */
static bool dechunk(char *data, size_t len, size_t *ret_len)
{
	size_t in = 0, out = 0;
	for (;;) {
		char *line_end = memmem(data + in, len - in, "\r\n", 2), *end;
		if (!line_end || !isxdigit((unsigned char)data[in]))
			return false;
		unsigned long long size = strtoull(data + in, &end, 16);
		if (end != line_end && *end != ';')
			return false;
		in = (size_t)(line_end - data) + 2;
		if (size == 0) {
			*ret_len = out;
			return true;
		}
		if (size > len - in || len - in - size < 2 || memcmp(data + in + size, "\r\n", 2))
			return false;
		memmove(data + out, data + in, size);
		out += size;
		in += size + 2;
	}
}

/* Parses the status line and the headers that delimit the body. */
static bool parse_head(const char *head, unsigned *ret_status, long long *ret_length,
		       bool *ret_chunked)
{
	if (strncmp(head, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)head[7]) ||
	    head[8] != ' ' || !isdigit((unsigned char)head[9]) ||
	    !isdigit((unsigned char)head[10]) || !isdigit((unsigned char)head[11]))
		return false;
	*ret_status = (unsigned)atoi(head + 9);
	*ret_length = -1;
	*ret_chunked = false;
	for (const char *line = strstr(head, "\r\n"); line && line[2] != '\r';
	     line = strstr(line + 2, "\r\n")) {
		const char *name = line + 2, *value = strchr(name, ':');
		if (!value)
			return false;
		value += 1 + strspn(value + 1, " \t");
		if (strncasecmp(name, "Content-Length:", 15) == 0) {
			if (!isdigit((unsigned char)*value))
				return false;
			*ret_length = strtoll(value, NULL, 10);
		} else if (strncasecmp(name, "Transfer-Encoding:", 18) == 0) {
			*ret_chunked = strncasecmp(value, "chunked", 7) == 0;
		}
	}
	return true;
}

/*
 * One exchange: method, base_url + path_and_query, an optional bearer token
 * and an optional body with its content type (see fl_httpc_request).
 */
static enum fl_status exchange(const char *method, const char *base_url,
			       const char *path_and_query, const char *bearer_token,
			       const char *content_type, const char *payload, size_t payload_len,
			       int timeout_ms, unsigned *ret_status, char **ret_body,
			       size_t *ret_len)
{
	int64_t deadline_us = fl_time_mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000;
	char host[256], port[8] = "80", *request = NULL, *buf = NULL, *head_end = NULL;
	size_t len = 0, cap = 0, sent = 0, request_len;
	int fd = -1;
	enum fl_status st;

	if (!base_url || !path_and_query || !ret_status || !ret_body || !ret_len ||
	    strncasecmp(base_url, "http://", 7) != 0 || path_and_query[0] != '/' ||
	    !printable(path_and_query, 0x21) || !printable(base_url, 0x21) ||
	    (bearer_token && (!bearer_token[0] || !printable(bearer_token, 0x20))))
		return FL_ERR_INVALID;
	const char *authority = base_url + 7, *prefix = authority + strcspn(authority, "/?#@");
	const char *host_from = authority, *host_to = prefix, *port_from = NULL;
	if (*authority == '[') {
		host_from = authority + 1;
		host_to = memchr(host_from, ']', (size_t)(prefix - host_from));
		if (!host_to || (host_to + 1 < prefix && host_to[1] != ':'))
			return FL_ERR_INVALID;
		port_from = host_to + 1 < prefix ? host_to + 2 : NULL;
	} else if ((port_from = memchr(authority, ':', (size_t)(prefix - authority)))) {
		host_to = port_from++;
	}
	size_t prefix_len = strlen(prefix);
	while (prefix_len && prefix[prefix_len - 1] == '/')
		prefix_len--;
	if (host_to == host_from || host_to - host_from >= (long)sizeof(host) ||
	    (*prefix && *prefix != '/') ||
	    (port_from && (prefix - port_from < 1 || prefix - port_from > 5 ||
			   strspn(port_from, "0123456789") < (size_t)(prefix - port_from))))
		return FL_ERR_INVALID;
	snprintf(host, sizeof(host), "%.*s", (int)(host_to - host_from), host_from);
	if (port_from)
		snprintf(port, sizeof(port), "%.*s", (int)(prefix - port_from), port_from);
	if (atoi(port) < 1 || atoi(port) > 65535)
		return FL_ERR_INVALID;

	char content_head[320] = "";
	if (content_type || payload_len || strcmp(method, "GET") != 0)
		snprintf(content_head, sizeof(content_head), "%s%s%sContent-Length: %zu\r\n",
			 content_type ? "Content-Type: " : "", content_type ? content_type : "",
			 content_type ? "\r\n" : "", payload_len);
	request_len = strlen(path_and_query) + prefix_len + (size_t)(prefix - authority) +
		      (bearer_token ? strlen(bearer_token) : 0) + strlen(method) +
		      strlen(content_head) + 160;
	if (payload_len > SIZE_MAX - request_len ||
	    !(request = malloc(request_len + payload_len)))
		return FL_ERR_NOMEM;
	request_len = (size_t)snprintf(
	    request, request_len,
	    "%s %.*s%s HTTP/1.1\r\nHost: %.*s\r\nUser-Agent: fledger\r\nAccept: */*\r\n"
	    "Connection: close\r\n%s%s%s%s\r\n",
	    method, (int)prefix_len, prefix, path_and_query, (int)(prefix - authority), authority,
	    bearer_token ? "Authorization: Bearer " : "", bearer_token ? bearer_token : "",
	    bearer_token ? "\r\n" : "", content_head);
	if (payload_len)
		memcpy(request + request_len, payload, payload_len);
	request_len += payload_len;
	st = dial(host, port, deadline_us, &fd);
	while (st == FL_OK && sent < request_len) {
		ssize_t n = send(fd, request + sent, request_len - sent, MSG_NOSIGNAL);
		if (n >= 0)
			sent += (size_t)n;
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
			st = wait_fd(fd, POLLOUT, deadline_us);
		else if (errno != EINTR)
			st = FL_ERR_UNAVAILABLE;
	}

	unsigned status = 0;
	long long length = -1;
	bool chunked = false;
	while (st == FL_OK) {
		if (!head_end && (head_end = memmem(buf ? buf : "", len, "\r\n\r\n", 4))) {
			*head_end = '\0'; /* the head ends here: parse it alone */
			if (!parse_head(buf, &status, &length, &chunked))
				st = FL_ERR_UNAVAILABLE;
			else if (length > (long long)FL_HTTPC_MAX_BODY)
				st = FL_ERR_FULL;
		} else if (!head_end && len > HEADER_MAX) {
			st = FL_ERR_UNAVAILABLE;
		}
		if (st != FL_OK ||
		    (head_end && !chunked && length >= 0 &&
		     len - (size_t)(head_end + 4 - buf) >= (unsigned long long)length))
			break;
		if (cap - len < 16 * 1024) {
			size_t head_at = head_end ? (size_t)(head_end - buf) : 0;
			size_t grown_cap = cap ? 2 * cap : 64 * 1024;
			if (grown_cap > FL_HTTPC_MAX_BODY + HEADER_MAX + 1)
				grown_cap = FL_HTTPC_MAX_BODY + HEADER_MAX + 1;
			char *grown = grown_cap > cap ? realloc(buf, grown_cap) : NULL;
			if (!grown) {
				st = grown_cap > cap ? FL_ERR_NOMEM : FL_ERR_FULL;
				break;
			}
			buf = grown;
			cap = grown_cap;
			head_end = head_end ? buf + head_at : NULL;
		}
		ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
		if (n > 0)
			len += (size_t)n;
		else if (n == 0)
			break;
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
			st = wait_fd(fd, POLLIN, deadline_us);
		else if (errno != EINTR)
			st = FL_ERR_UNAVAILABLE;
	}
	if (fd >= 0)
		close(fd);
	free(request);

	size_t body_at = head_end ? (size_t)(head_end + 4 - buf) : 0, body_len = len - body_at;
	if (st == FL_OK && !head_end)
		st = FL_ERR_UNAVAILABLE;
	else if (st == FL_OK && chunked && !dechunk(buf + body_at, body_len, &body_len))
		st = FL_ERR_UNAVAILABLE;
	else if (st == FL_OK && !chunked && length >= 0 && body_len < (unsigned long long)length)
		st = FL_ERR_UNAVAILABLE;
	else if (st == FL_OK && !chunked && length >= 0)
		body_len = (size_t)length;
	if (st == FL_OK && body_len > FL_HTTPC_MAX_BODY)
		st = FL_ERR_FULL;
	if (st != FL_OK) {
		free(buf);
		return st;
	}
	memmove(buf, buf + body_at, body_len);
	buf[body_len] = '\0';
	*ret_status = status;
	*ret_body = buf;
	*ret_len = body_len;
	return FL_OK;
}

enum fl_status fl_httpc_get(const char *base_url, const char *path_and_query,
			    const char *bearer_token, int timeout_ms, unsigned *ret_status,
			    char **ret_body, size_t *ret_len)
{
	return exchange("GET", base_url, path_and_query, bearer_token, NULL, NULL, 0, timeout_ms,
			ret_status, ret_body, ret_len);
}

enum fl_status fl_httpc_request(const char *method, const char *base_url,
				const char *path_and_query, const char *bearer_token,
				const char *content_type, const char *body, size_t body_len,
				int timeout_ms, unsigned *ret_status, char **ret_body,
				size_t *ret_len)
{
	if (!method || !method[0] || strlen(method) > 16 ||
	    strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(method) ||
	    (content_type && (!content_type[0] || strlen(content_type) > 200 ||
			      !printable(content_type, 0x20))) ||
	    (body_len && !body))
		return FL_ERR_INVALID;
	return exchange(method, base_url, path_and_query, bearer_token, content_type, body,
			body_len, timeout_ms, ret_status, ret_body, ret_len);
}
