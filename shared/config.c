#include "fledger/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "fledger/text.h"
#include "fledger/util.h"

struct fl_config {
	const struct fl_config_option *options;
	size_t n_options;
	char **values; /* one per option, malloc'd, NULL when unset */
	char ***given; /* per option, its command-line values in order (NULL-terminated) */
	bool wants_help;
	char **positional;
	size_t n_positional;
};

/* Maps boolean text to "true" or "false"; NULL when it is neither. */
static const char *normalize_bool(const char *text)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(text, yes[i]) == 0)
			return "true";
		if (strcasecmp(text, no[i]) == 0)
			return "false";
	}
	return NULL;
}

static ssize_t find_option(const struct fl_config_option *options, size_t n_options,
			   const char *name, size_t name_len)
{
	for (size_t i = 0; i < n_options; i++) {
		if (strlen(options[i].flag) == name_len &&
		    memcmp(options[i].flag, name, name_len) == 0)
			return (ssize_t)i;
	}
	return -1;
}

/*
 * Stores text as the value of option index, replacing an earlier one. origin
 * names where the value came from, for the error message.
 */
static enum fl_status set_value(struct fl_config *config, size_t index, const char *text,
				const char *origin, char *error, size_t error_size)
{
	const struct fl_config_option *option = &config->options[index];
	char *copy;

	if (option->is_bool) {
		const char *normalized = normalize_bool(text);
		if (normalized == NULL) {
			fl_set_error(error, error_size,
				     "%s for --%s is \"%s\", not true/false, yes/no, on/off or 1/0",
				     origin, option->flag, text);
			return FL_ERR_INVALID;
		}
		text = normalized;
	}
	copy = strdup(text);
	if (copy == NULL) {
		fl_set_error(error, error_size, "out of memory");
		return FL_ERR_NOMEM;
	}
	free(config->values[index]);
	config->values[index] = copy;
	return FL_OK;
}

static enum fl_status add_positional(struct fl_config *config, const char *arg, char *error,
				     size_t error_size)
{
	char *copy = strdup(arg);

	if (copy == NULL) {
		fl_set_error(error, error_size, "out of memory");
		return FL_ERR_NOMEM;
	}
	/* The array was sized for every argument up front. */
	config->positional[config->n_positional++] = copy;
	return FL_OK;
}

/* Fills values from defaults, then from the environment. */
static enum fl_status apply_defaults_and_env(struct fl_config *config, char *error,
					     size_t error_size)
{
	for (size_t i = 0; i < config->n_options; i++) {
		const struct fl_config_option *option = &config->options[i];
		const char *env_value = option->env != NULL ? getenv(option->env) : NULL;
		enum fl_status status;

		if (env_value != NULL && env_value[0] != '\0')
			status = set_value(config, i, env_value, option->env, error, error_size);
		else if (option->default_value != NULL)
			status = set_value(config, i, option->default_value, "the default", error,
					   error_size);
		else
			status = FL_OK;
		if (status != FL_OK)
			return status;
	}
	return FL_OK;
}

/* Appends the value just set for option index to its command-line values. */
static enum fl_status remember_given(struct fl_config *config, size_t index, char *error,
				     size_t error_size)
{
	size_t n = 0;
	char **list = config->given[index], *copy = strdup(config->values[index]);

	while (list && list[n])
		n++;
	char **grown = copy ? realloc(list, (n + 2) * sizeof(*grown)) : NULL;
	if (!grown) {
		free(copy);
		fl_set_error(error, error_size, "out of memory");
		return FL_ERR_NOMEM;
	}
	grown[n] = copy;
	grown[n + 1] = NULL;
	config->given[index] = grown;
	return FL_OK;
}

static enum fl_status parse_args(struct fl_config *config, int argc, char *const *argv, char *error,
				 size_t error_size)
{
	bool flags_done = false;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *name, *equals, *value;
		size_t name_len;
		ssize_t index;
		enum fl_status status;

		if (flags_done || arg[0] != '-' || strcmp(arg, "-") == 0) {
			status = add_positional(config, arg, error, error_size);
			if (status != FL_OK)
				return status;
			continue;
		}
		if (strcmp(arg, "--") == 0) {
			flags_done = true;
			continue;
		}
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			config->wants_help = true;
			continue;
		}
		if (arg[1] != '-' || arg[2] == '\0') {
			fl_set_error(error, error_size, "unknown flag %s (flags are --name)", arg);
			return FL_ERR_INVALID;
		}
		name = arg + 2;
		equals = strchr(name, '=');
		name_len = equals != NULL ? (size_t)(equals - name) : strlen(name);
		index = find_option(config->options, config->n_options, name, name_len);
		if (index < 0) {
			fl_set_error(error, error_size, "unknown flag --%.*s", (int)name_len, name);
			return FL_ERR_INVALID;
		}
		if (equals != NULL) {
			value = equals + 1;
		} else if (config->options[index].is_bool) {
			value = "true";
		} else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
			value = argv[++i];
		} else {
			fl_set_error(error, error_size, "flag --%s needs a value",
				     config->options[index].flag);
			return FL_ERR_INVALID;
		}
		status = set_value(config, (size_t)index, value, "the value", error, error_size);
		if (status == FL_OK)
			status = remember_given(config, (size_t)index, error, error_size);
		if (status != FL_OK)
			return status;
	}
	return FL_OK;
}

enum fl_status fl_config_parse(const struct fl_config_option *options, size_t n_options, int argc,
			       char *const *argv, char *error, size_t error_size,
			       struct fl_config **ret_config)
{
	struct fl_config *config;
	enum fl_status status;

	if ((options == NULL && n_options > 0) || argc < 0 || (argv == NULL && argc > 0) ||
	    ret_config == NULL) {
		fl_set_error(error, error_size, "invalid arguments");
		return FL_ERR_INVALID;
	}
	for (size_t i = 0; i < n_options; i++) {
		if (options[i].flag == NULL || options[i].flag[0] == '\0' ||
		    strchr(options[i].flag, '=') != NULL) {
			fl_set_error(error, error_size, "option %zu has no usable flag name", i);
			return FL_ERR_INVALID;
		}
	}

	config = calloc(1, sizeof(*config));
	if (config == NULL)
		goto fail_nomem;
	config->options = options;
	config->n_options = n_options;
	config->values = calloc(n_options > 0 ? n_options : 1, sizeof(config->values[0]));
	config->given = calloc(n_options > 0 ? n_options : 1, sizeof(config->given[0]));
	config->positional = calloc(argc > 0 ? (size_t)argc : 1, sizeof(config->positional[0]));
	if (config->values == NULL || config->given == NULL || config->positional == NULL)
		goto fail_nomem;

	status = apply_defaults_and_env(config, error, error_size);
	if (status != FL_OK)
		goto fail;
	status = parse_args(config, argc, argv, error, error_size);
	if (status != FL_OK)
		goto fail;
	*ret_config = config;
	return FL_OK;

fail_nomem:
	fl_set_error(error, error_size, "out of memory");
	status = FL_ERR_NOMEM;
fail:
	fl_config_destroy(config);
	return status;
}

void fl_config_destroy(struct fl_config *config)
{
	if (config == NULL)
		return;
	if (config->values != NULL) {
		for (size_t i = 0; i < config->n_options; i++)
			free(config->values[i]);
	}
	if (config->given != NULL) {
		for (size_t i = 0; i < config->n_options; i++)
			fl_config_list_free(config->given[i]);
	}
	if (config->positional != NULL) {
		for (size_t i = 0; i < config->n_positional; i++)
			free(config->positional[i]);
	}
	free(config->given);
	free(config->values);
	free(config->positional);
	free(config);
}

bool fl_config_wants_help(const struct fl_config *config)
{
	return config != NULL && config->wants_help;
}

const char *fl_config_get(const struct fl_config *config, const char *flag)
{
	ssize_t index;

	if (config == NULL || flag == NULL)
		return NULL;
	index = find_option(config->options, config->n_options, flag, strlen(flag));
	return index < 0 ? NULL : config->values[index];
}

void fl_config_list_free(char **values)
{
	if (values == NULL)
		return;
	for (size_t i = 0; values[i] != NULL; i++)
		free(values[i]);
	free(values);
}

/* Appends the non-empty pieces of text, split at separators, to *list. */
static enum fl_status split_into(const char *text, const char *separators, char ***list,
				 size_t *count)
{
	const char *seps = separators != NULL ? separators : "";

	for (const char *p = text;;) {
		size_t len = strcspn(p, seps);
		if (len > 0) {
			char **grown = realloc(*list, (*count + 2) * sizeof(*grown));
			if (grown == NULL)
				return FL_ERR_NOMEM;
			*list = grown;
			grown[*count] = strndup(p, len);
			grown[*count + 1] = NULL;
			if (grown[*count] == NULL)
				return FL_ERR_NOMEM;
			(*count)++;
		}
		if (p[len] == '\0')
			return FL_OK;
		p += len + 1;
	}
}

enum fl_status fl_config_get_list(const struct fl_config *config, const char *flag,
				  const char *separators, char ***ret_values, size_t *ret_count)
{
	ssize_t index;
	char **list = NULL;
	size_t count = 0;
	enum fl_status status = FL_OK;

	if (config == NULL || flag == NULL || ret_values == NULL || ret_count == NULL)
		return FL_ERR_INVALID;
	index = find_option(config->options, config->n_options, flag, strlen(flag));
	if (index < 0)
		return FL_ERR_INVALID;
	list = calloc(1, sizeof(*list));
	if (list == NULL)
		return FL_ERR_NOMEM;
	if (config->given[index] != NULL) {
		for (size_t i = 0; status == FL_OK && config->given[index][i] != NULL; i++)
			status = split_into(config->given[index][i], separators, &list, &count);
	} else if (config->values[index] != NULL) {
		status = split_into(config->values[index], separators, &list, &count);
	}
	if (status != FL_OK) {
		fl_config_list_free(list);
		return status;
	}
	*ret_values = list;
	*ret_count = count;
	return FL_OK;
}

bool fl_config_get_bool(const struct fl_config *config, const char *flag)
{
	const char *value = fl_config_get(config, flag);

	/* Values of boolean options were normalized when they were stored. */
	return value != NULL && strcmp(value, "true") == 0;
}

enum fl_status fl_config_get_int(const struct fl_config *config, const char *flag, int64_t min,
				 int64_t max, int64_t *ret_value)
{
	const char *value = fl_config_get(config, flag);
	char *end;
	long long parsed;

	if (ret_value == NULL)
		return FL_ERR_INVALID;
	if (value == NULL)
		return FL_ERR_NOT_FOUND;
	errno = 0;
	parsed = strtoll(value, &end, 10);
	if (value[0] == '\0' || *end != '\0' || errno != 0 || parsed < min || parsed > max)
		return FL_ERR_INVALID;
	*ret_value = parsed;
	return FL_OK;
}

enum fl_status fl_config_get_duration(const struct fl_config *config, const char *flag,
				      int64_t min_us, int64_t max_us, int64_t *ret_us)
{
	const char *value = fl_config_get(config, flag);
	int64_t us;

	if (ret_us == NULL)
		return FL_ERR_INVALID;
	if (value == NULL)
		return FL_ERR_NOT_FOUND;
	if (fl_duration_parse(value, &us) != FL_OK || us < min_us || us > max_us)
		return FL_ERR_INVALID;
	*ret_us = us;
	return FL_OK;
}

size_t fl_config_positional_count(const struct fl_config *config)
{
	return config != NULL ? config->n_positional : 0;
}

const char *fl_config_positional(const struct fl_config *config, size_t index)
{
	if (config == NULL || index >= config->n_positional)
		return NULL;
	return config->positional[index];
}

char *fl_config_usage(const char *program, const struct fl_config_option *options, size_t n_options)
{
	struct fl_text usage = FL_TEXT_INIT;
	int width = (int)strlen("help");

	if (options == NULL && n_options > 0)
		return NULL;
	for (size_t i = 0; i < n_options; i++) {
		int len = (int)strlen(options[i].flag) + (options[i].is_bool ? 0 : 6);
		if (len > width)
			width = len;
	}

	fl_text_printf(&usage, "Usage: %s [options]\n\nOptions:\n",
		       program != NULL ? program : "program");
	for (size_t i = 0; i < n_options; i++) {
		const struct fl_config_option *option = &options[i];
		int len = (int)strlen(option->flag);

		if (option->is_bool)
			fl_text_printf(&usage, "  --%s%*s  %s", option->flag, width - len, "",
				       option->help != NULL ? option->help : "");
		else
			fl_text_printf(&usage, "  --%s VALUE%*s  %s", option->flag, width - len - 6,
				       "", option->help != NULL ? option->help : "");
		if (option->env != NULL)
			fl_text_printf(&usage, " [env %s]", option->env);
		if (option->default_value != NULL)
			fl_text_printf(&usage, " (default: %s)", option->default_value);
		fl_text_puts(&usage, "\n");
	}
	fl_text_printf(&usage, "  --help%*s  show this text\n", width - 4, "");
	return fl_text_take(&usage, NULL);
}
