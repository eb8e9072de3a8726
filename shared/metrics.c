#include "fledger/metrics.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/text.h"

/*
 * A family owns its series. Lookups walk a small hash table of atomic
 * pointers without a lock: a series is fully built before it is published
 * with a release store, and is never unlinked before the registry dies.
 * Creation and rendering hold the registry mutex.
 */

#define BUCKET_COUNT 64

enum kind {
	KIND_COUNTER,
	KIND_GAUGE,
	KIND_HISTOGRAM,
};

struct family;

struct series {
	struct family *family;
	char *label_values[FL_METRICS_MAX_LABELS];
	uint64_t hash;
	_Atomic(struct series *) hash_next;
	struct series *order_next; /* creation order, read under the mutex */
	union {
		_Atomic uint64_t count;	     /* counter */
		_Atomic uint64_t value_bits; /* gauge: the bits of a double */
	} u;
	/* Histograms: n_bounds + 1 non-cumulative bucket counts (the last is
	 * +Inf) and the sum of observations as double bits. */
	_Atomic uint64_t sum_bits;
	_Atomic uint64_t *buckets;
};

/* The public types are the series itself; families hand out their root. */
struct fl_counter {
	struct series series;
};
struct fl_gauge {
	struct series series;
};
struct fl_histogram {
	struct series series;
};

struct family {
	struct fl_metrics *metrics;
	enum kind kind;
	char *name;
	char *help;
	size_t n_labels;
	char *label_names[FL_METRICS_MAX_LABELS];
	double *bounds;
	size_t n_bounds;
	/* Unlabeled families render root; labeled ones their children. The
	 * root is allocated with the type the caller sees. */
	struct series *root;
	_Atomic(struct series *) heads[BUCKET_COUNT];
	struct series *order_head, *order_tail;
	struct family *next;
};

struct fl_metrics {
	pthread_mutex_t lock;
	struct family *families_head, *families_tail;
};

static const double default_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
					0.05,	0.1,	 0.25,	 0.5,	1,	2.5,   5,    10};

static uint64_t double_bits(double value)
{
	uint64_t bits;

	memcpy(&bits, &value, sizeof(bits));
	return bits;
}

static double bits_double(uint64_t bits)
{
	double value;

	memcpy(&value, &bits, sizeof(value));
	return value;
}

static void atomic_add_double(_Atomic uint64_t *target, double amount)
{
	uint64_t old_bits = atomic_load_explicit(target, memory_order_relaxed);

	while (!atomic_compare_exchange_weak_explicit(target, &old_bits,
						      double_bits(bits_double(old_bits) + amount),
						      memory_order_relaxed, memory_order_relaxed))
		;
}

enum fl_status fl_metrics_create(struct fl_metrics **ret_metrics)
{
	struct fl_metrics *metrics;

	if (ret_metrics == NULL)
		return FL_ERR_INVALID;
	metrics = calloc(1, sizeof(*metrics));
	if (metrics == NULL)
		return FL_ERR_NOMEM;
	if (pthread_mutex_init(&metrics->lock, NULL) != 0) {
		free(metrics);
		return FL_ERR_NOMEM;
	}
	*ret_metrics = metrics;
	return FL_OK;
}

static void series_free(struct series *series)
{
	if (series == NULL)
		return;
	for (size_t i = 0; i < FL_METRICS_MAX_LABELS; i++)
		free(series->label_values[i]);
	free(series->buckets);
	free(series);
}

static void family_free(struct family *family)
{
	struct series *series, *next;

	if (family == NULL)
		return;
	for (series = family->order_head; series != NULL; series = next) {
		next = series->order_next;
		series_free(series);
	}
	series_free(family->root);
	for (size_t i = 0; i < family->n_labels; i++)
		free(family->label_names[i]);
	free(family->name);
	free(family->help);
	free(family->bounds);
	free(family);
}

void fl_metrics_destroy(struct fl_metrics *metrics)
{
	struct family *family, *next;

	if (metrics == NULL)
		return;
	for (family = metrics->families_head; family != NULL; family = next) {
		next = family->next;
		family_free(family);
	}
	pthread_mutex_destroy(&metrics->lock);
	free(metrics);
}

static bool valid_metric_name(const char *name)
{
	if (name == NULL || name[0] == '\0' || (name[0] >= '0' && name[0] <= '9'))
		return false;
	for (const char *c = name; *c != '\0'; c++) {
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '_' || *c == ':'))
			return false;
	}
	return true;
}

static bool valid_label_name(const char *name)
{
	if (name == NULL || name[0] == '\0' || (name[0] >= '0' && name[0] <= '9') ||
	    strncmp(name, "__", 2) == 0)
		return false;
	for (const char *c = name; *c != '\0'; c++) {
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '_'))
			return false;
	}
	return true;
}

/* Allocates a series of family (values NULL for a root). */
static struct series *series_new(struct family *family, const char *const *label_values,
				 uint64_t hash)
{
	struct series *series = calloc(1, sizeof(*series));

	if (series == NULL)
		return NULL;
	series->family = family;
	series->hash = hash;
	if (family->kind == KIND_HISTOGRAM) {
		series->buckets = calloc(family->n_bounds + 1, sizeof(series->buckets[0]));
		if (series->buckets == NULL)
			goto fail;
	}
	if (family->kind == KIND_GAUGE)
		atomic_init(&series->u.value_bits, double_bits(0.0));
	atomic_init(&series->sum_bits, double_bits(0.0));
	for (size_t i = 0; label_values != NULL && i < family->n_labels; i++) {
		series->label_values[i] = strdup(label_values[i]);
		if (series->label_values[i] == NULL)
			goto fail;
	}
	return series;
fail:
	series_free(series);
	return NULL;
}

static enum fl_status register_family(struct fl_metrics *metrics, enum kind kind, const char *name,
				      const char *help, const char *const *label_names,
				      const double *bounds, size_t n_bounds,
				      struct series **ret_root)
{
	struct family *family;
	size_t n_labels = 0;
	enum fl_status status;

	if (metrics == NULL || ret_root == NULL || !valid_metric_name(name))
		return FL_ERR_INVALID;
	for (; label_names != NULL && label_names[n_labels] != NULL; n_labels++) {
		if (n_labels == FL_METRICS_MAX_LABELS || !valid_label_name(label_names[n_labels]) ||
		    (kind == KIND_HISTOGRAM && strcmp(label_names[n_labels], "le") == 0))
			return FL_ERR_INVALID;
		for (size_t i = 0; i < n_labels; i++) {
			if (strcmp(label_names[i], label_names[n_labels]) == 0)
				return FL_ERR_INVALID;
		}
	}
	if (kind == KIND_HISTOGRAM) {
		if (bounds == NULL) {
			bounds = default_bounds;
			n_bounds = sizeof(default_bounds) / sizeof(default_bounds[0]);
		}
		if (n_bounds == 0)
			return FL_ERR_INVALID;
		for (size_t i = 0; i < n_bounds; i++) {
			if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
				return FL_ERR_INVALID;
		}
	}

	family = calloc(1, sizeof(*family));
	if (family == NULL)
		return FL_ERR_NOMEM;
	family->metrics = metrics;
	family->kind = kind;
	family->n_labels = n_labels;
	family->name = strdup(name);
	family->help = strdup(help != NULL ? help : "");
	if (family->name == NULL || family->help == NULL)
		goto fail_nomem;
	for (size_t i = 0; i < n_labels; i++) {
		family->label_names[i] = strdup(label_names[i]);
		if (family->label_names[i] == NULL)
			goto fail_nomem;
	}
	if (kind == KIND_HISTOGRAM) {
		family->bounds = malloc(n_bounds * sizeof(family->bounds[0]));
		if (family->bounds == NULL)
			goto fail_nomem;
		memcpy(family->bounds, bounds, n_bounds * sizeof(family->bounds[0]));
		family->n_bounds = n_bounds;
	}
	family->root = series_new(family, NULL, 0);
	if (family->root == NULL)
		goto fail_nomem;

	pthread_mutex_lock(&metrics->lock);
	for (struct family *other = metrics->families_head; other != NULL; other = other->next) {
		if (strcmp(other->name, name) == 0) {
			pthread_mutex_unlock(&metrics->lock);
			status = FL_ERR_CONFLICT;
			goto fail;
		}
	}
	if (metrics->families_tail != NULL)
		metrics->families_tail->next = family;
	else
		metrics->families_head = family;
	metrics->families_tail = family;
	pthread_mutex_unlock(&metrics->lock);
	*ret_root = family->root;
	return FL_OK;

fail_nomem:
	status = FL_ERR_NOMEM;
fail:
	family_free(family);
	return status;
}

enum fl_status fl_metrics_counter(struct fl_metrics *metrics, const char *name, const char *help,
				  const char *const *label_names, struct fl_counter **ret_counter)
{
	struct series *root;
	enum fl_status status;

	if (ret_counter == NULL)
		return FL_ERR_INVALID;
	status = register_family(metrics, KIND_COUNTER, name, help, label_names, NULL, 0, &root);
	if (status == FL_OK)
		*ret_counter = (struct fl_counter *)root;
	return status;
}

enum fl_status fl_metrics_gauge(struct fl_metrics *metrics, const char *name, const char *help,
				const char *const *label_names, struct fl_gauge **ret_gauge)
{
	struct series *root;
	enum fl_status status;

	if (ret_gauge == NULL)
		return FL_ERR_INVALID;
	status = register_family(metrics, KIND_GAUGE, name, help, label_names, NULL, 0, &root);
	if (status == FL_OK)
		*ret_gauge = (struct fl_gauge *)root;
	return status;
}

enum fl_status fl_metrics_histogram(struct fl_metrics *metrics, const char *name, const char *help,
				    const char *const *label_names, const double *bounds,
				    size_t n_bounds, struct fl_histogram **ret_histogram)
{
	struct series *root;
	enum fl_status status;

	if (ret_histogram == NULL)
		return FL_ERR_INVALID;
	status = register_family(metrics, KIND_HISTOGRAM, name, help, label_names, bounds, n_bounds,
				 &root);
	if (status == FL_OK)
		*ret_histogram = (struct fl_histogram *)root;
	return status;
}

/* FNV-1a over the label values, each followed by a 0 byte. */
static uint64_t hash_values(const char *const *values, size_t n)
{
	uint64_t hash = 14695981039346656037ULL;

	for (size_t i = 0; i < n; i++) {
		for (const unsigned char *c = (const unsigned char *)values[i];; c++) {
			hash = (hash ^ *c) * 1099511628211ULL;
			if (*c == '\0')
				break;
		}
	}
	return hash;
}

static struct series *find_in_bucket(struct series *series, const char *const *values,
				     size_t n_labels, uint64_t hash)
{
	for (; series != NULL;
	     series = atomic_load_explicit(&series->hash_next, memory_order_acquire)) {
		size_t i;

		if (series->hash != hash)
			continue;
		for (i = 0; i < n_labels; i++) {
			if (strcmp(series->label_values[i], values[i]) != 0)
				break;
		}
		if (i == n_labels)
			return series;
	}
	return NULL;
}

/* The child series of root's family for values, created on first use. */
static struct series *series_with(struct series *root, const char *const *values)
{
	struct family *family;
	_Atomic(struct series *) *head;
	struct series *series;
	uint64_t hash;

	if (root == NULL || values == NULL || root != root->family->root)
		return NULL;
	family = root->family;
	if (family->n_labels == 0)
		return NULL;
	for (size_t i = 0; i < family->n_labels; i++) {
		if (values[i] == NULL)
			return NULL;
	}
	hash = hash_values(values, family->n_labels);
	head = &family->heads[hash % BUCKET_COUNT];
	series = find_in_bucket(atomic_load_explicit(head, memory_order_acquire), values,
				family->n_labels, hash);
	if (series != NULL)
		return series;

	pthread_mutex_lock(&family->metrics->lock);
	/* Another thread may have created it since the lock-free look. */
	series = find_in_bucket(atomic_load_explicit(head, memory_order_acquire), values,
				family->n_labels, hash);
	if (series == NULL) {
		series = series_new(family, values, hash);
		if (series != NULL) {
			atomic_store_explicit(&series->hash_next,
					      atomic_load_explicit(head, memory_order_relaxed),
					      memory_order_relaxed);
			atomic_store_explicit(head, series, memory_order_release);
			if (family->order_tail != NULL)
				family->order_tail->order_next = series;
			else
				family->order_head = series;
			family->order_tail = series;
		}
	}
	pthread_mutex_unlock(&family->metrics->lock);
	return series;
}

struct fl_counter *fl_counter_with(struct fl_counter *family, const char *const *label_values)
{
	return (struct fl_counter *)series_with(family != NULL ? &family->series : NULL,
						label_values);
}

struct fl_gauge *fl_gauge_with(struct fl_gauge *family, const char *const *label_values)
{
	return (struct fl_gauge *)series_with(family != NULL ? &family->series : NULL,
					      label_values);
}

struct fl_histogram *fl_histogram_with(struct fl_histogram *family, const char *const *label_values)
{
	return (struct fl_histogram *)series_with(family != NULL ? &family->series : NULL,
						  label_values);
}

/* Whether updates to series are rendered: not the root of a labeled family. */
static inline bool is_series(const struct series *series)
{
	return series->family->n_labels == 0 || series != series->family->root;
}

void fl_counter_add(struct fl_counter *counter, uint64_t amount)
{
	if (counter == NULL)
		return;
	assert(is_series(&counter->series));
	atomic_fetch_add_explicit(&counter->series.u.count, amount, memory_order_relaxed);
}

void fl_counter_inc(struct fl_counter *counter)
{
	fl_counter_add(counter, 1);
}

void fl_gauge_set(struct fl_gauge *gauge, double value)
{
	if (gauge == NULL)
		return;
	assert(is_series(&gauge->series));
	atomic_store_explicit(&gauge->series.u.value_bits, double_bits(value),
			      memory_order_relaxed);
}

void fl_gauge_add(struct fl_gauge *gauge, double amount)
{
	if (gauge == NULL)
		return;
	assert(is_series(&gauge->series));
	atomic_add_double(&gauge->series.u.value_bits, amount);
}

void fl_histogram_observe(struct fl_histogram *histogram, double value)
{
	struct family *family;
	size_t low, high;

	if (histogram == NULL)
		return;
	assert(is_series(&histogram->series));
	family = histogram->series.family;
	/* The first bucket whose bound is >= value; NaN lands in +Inf. */
	low = 0;
	high = family->n_bounds;
	while (low < high) {
		size_t mid = (low + high) / 2;
		if (value <= family->bounds[mid])
			high = mid;
		else
			low = mid + 1;
	}
	if (isnan(value))
		low = family->n_bounds;
	atomic_fetch_add_explicit(&histogram->series.buckets[low], 1, memory_order_relaxed);
	atomic_add_double(&histogram->series.sum_bits, value);
}

/* Appends text with backslash and newline escaped, and '"' when in_label. */
static void append_escaped(struct fl_text *buffer, const char *text, bool in_label)
{
	for (const char *c = text; *c != '\0'; c++) {
		if (*c == '\\')
			fl_text_append(buffer, "\\\\", 2);
		else if (*c == '\n')
			fl_text_append(buffer, "\\n", 2);
		else if (*c == '"' && in_label)
			fl_text_append(buffer, "\\\"", 2);
		else
			fl_text_append(buffer, c, 1);
	}
}

/* The shortest text that reads back as value; "+Inf", "-Inf", "NaN". */
static void format_double(double value, char out[32])
{
	if (isnan(value)) {
		strcpy(out, "NaN");
		return;
	}
	if (isinf(value)) {
		strcpy(out, value > 0 ? "+Inf" : "-Inf");
		return;
	}
	/* Whole numbers print whole: "10", not "1e+01". */
	if (value == trunc(value) && fabs(value) < 9007199254740992.0) {
		snprintf(out, 32, "%.0f", value);
		return;
	}
	for (int precision = 1; precision <= 17; precision++) {
		snprintf(out, 32, "%.*g", precision, value);
		if (strtod(out, NULL) == value)
			return;
	}
}

static void append_double(struct fl_text *buffer, double value)
{
	char text[32];

	format_double(value, text);
	fl_text_puts(buffer, text);
}

static void append_u64(struct fl_text *buffer, uint64_t value)
{
	fl_text_printf(buffer, "%llu", (unsigned long long)value);
}

/*
 * Appends name + suffix and the label set of series, plus le when it is not
 * NULL, then a space.
 */
static void append_sample_name(struct fl_text *buffer, const struct series *series,
			       const char *suffix, const char *le)
{
	const struct family *family = series->family;
	bool has_labels = (family->n_labels > 0 && series != family->root) || le != NULL;

	fl_text_puts(buffer, family->name);
	fl_text_puts(buffer, suffix);
	if (has_labels) {
		bool first = true;

		fl_text_append(buffer, "{", 1);
		for (size_t i = 0; series != family->root && i < family->n_labels; i++) {
			if (!first)
				fl_text_append(buffer, ",", 1);
			first = false;
			fl_text_puts(buffer, family->label_names[i]);
			fl_text_append(buffer, "=\"", 2);
			append_escaped(buffer, series->label_values[i], true);
			fl_text_append(buffer, "\"", 1);
		}
		if (le != NULL) {
			if (!first)
				fl_text_append(buffer, ",", 1);
			fl_text_puts(buffer, "le=\"");
			fl_text_puts(buffer, le);
			fl_text_append(buffer, "\"", 1);
		}
		fl_text_append(buffer, "}", 1);
	}
	fl_text_append(buffer, " ", 1);
}

static void render_series(struct fl_text *buffer, const struct series *series)
{
	const struct family *family = series->family;

	switch (family->kind) {
	case KIND_COUNTER:
		append_sample_name(buffer, series, "", NULL);
		append_u64(buffer, atomic_load_explicit(&series->u.count, memory_order_relaxed));
		fl_text_append(buffer, "\n", 1);
		break;
	case KIND_GAUGE:
		append_sample_name(buffer, series, "", NULL);
		append_double(buffer, bits_double(atomic_load_explicit(&series->u.value_bits,
								       memory_order_relaxed)));
		fl_text_append(buffer, "\n", 1);
		break;
	case KIND_HISTOGRAM: {
		uint64_t cumulative = 0;
		char le[32];

		/* _count is the +Inf bucket, so the two always agree even
		 * while other threads observe. */
		for (size_t i = 0; i <= family->n_bounds; i++) {
			cumulative +=
			    atomic_load_explicit(&series->buckets[i], memory_order_relaxed);
			if (i < family->n_bounds)
				format_double(family->bounds[i], le);
			else
				strcpy(le, "+Inf");
			append_sample_name(buffer, series, "_bucket", le);
			append_u64(buffer, cumulative);
			fl_text_append(buffer, "\n", 1);
		}
		append_sample_name(buffer, series, "_sum", NULL);
		append_double(buffer, bits_double(atomic_load_explicit(&series->sum_bits,
								       memory_order_relaxed)));
		fl_text_append(buffer, "\n", 1);
		append_sample_name(buffer, series, "_count", NULL);
		append_u64(buffer, cumulative);
		fl_text_append(buffer, "\n", 1);
		break;
	}
	}
}

enum fl_status fl_metrics_render(struct fl_metrics *metrics, char **ret_text, size_t *ret_len)
{
	static const char *const type_names[] = {
	    [KIND_COUNTER] = "counter",
	    [KIND_GAUGE] = "gauge",
	    [KIND_HISTOGRAM] = "histogram",
	};
	struct fl_text buffer = FL_TEXT_INIT;

	if (metrics == NULL || ret_text == NULL || ret_len == NULL)
		return FL_ERR_INVALID;

	pthread_mutex_lock(&metrics->lock);
	for (const struct family *family = metrics->families_head; family != NULL;
	     family = family->next) {
		fl_text_puts(&buffer, "# HELP ");
		fl_text_puts(&buffer, family->name);
		fl_text_append(&buffer, " ", 1);
		append_escaped(&buffer, family->help, false);
		fl_text_puts(&buffer, "\n# TYPE ");
		fl_text_puts(&buffer, family->name);
		fl_text_append(&buffer, " ", 1);
		fl_text_puts(&buffer, type_names[family->kind]);
		fl_text_append(&buffer, "\n", 1);
		if (family->n_labels == 0) {
			render_series(&buffer, family->root);
			continue;
		}
		for (const struct series *series = family->order_head; series != NULL;
		     series = series->order_next)
			render_series(&buffer, series);
	}
	pthread_mutex_unlock(&metrics->lock);

	char *text = fl_text_take(&buffer, ret_len);
	if (text == NULL)
		return FL_ERR_NOMEM;
	*ret_text = text;
	return FL_OK;
}
