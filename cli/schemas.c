/*
 * schemas.c - `constellation schemas check` (see schemas.h). A developer and CI command: it reads
 * the working tree and git history of the repository (through the git executable) and never
 * touches Kafka. Single-threaded.
 */
#include "cli/schemas.h"

#include "platform/avro_schema.h"
#include "platform/schema_check.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE    (1u << 20)
#define MAX_VERSION 4096

typedef struct version {
    char *path;
    char *commit; /* NULL for the working tree */
    cstl_avro_schema *schema;
    bool current;
} version;

typedef struct vlist {
    version *v;
    size_t n, cap;
} vlist;

static void vlist_add(vlist *l, version v)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = cstl_xrealloc(l->v, l->cap * sizeof(version));
    }
    l->v[l->n++] = v;
}

static void vlist_free(vlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].path);
        free(l->v[i].commit);
        cstl_avro_schema_free(l->v[i].schema);
    }
    free(l->v);
}

static bool safe_chars(const char *s, const char *extra)
{
    if (!s[0] || s[0] == '-')
        return false;
    for (const char *p = s; *p; p++)
        if (!(((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')) ||
              strchr(extra, *p)))
            return false;
    return true;
}

static bool valid_schema_path(const char *p)
{
    size_t n = strlen(p);
    return strncmp(p, "schemas/", 8) == 0 && n > 5 && strcmp(p + n - 5, ".avsc") == 0 &&
           !strstr(p, "..") && safe_chars(p, "/._-");
}

/* Runs a git command (arguments already validated) and returns its whole output, or NULL. */
static char *git_output(const char *root, const char *args, size_t *len)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "git -C '%s' %s 2>/dev/null", root, args);
    FILE *f = popen(cmd, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = cstl_xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            if (cap >= 64u * MAX_FILE)
                break;
            cap *= 2;
            buf = cstl_xrealloc(buf, cap);
        }
    }
    buf[n] = '\0';
    if (pclose(f) != 0) {
        free(buf);
        return NULL;
    }
    if (len)
        *len = n;
    return buf;
}

static char *read_file(const char *root, const char *path, size_t *len)
{
    char full[2048];
    snprintf(full, sizeof full, "%s/%s", root, path);
    FILE *f = fopen(full, "rb");
    if (!f)
        return NULL;
    char *buf = cstl_xmalloc(MAX_FILE + 1);
    *len = fread(buf, 1, MAX_FILE + 1, f);
    fclose(f);
    if (*len > MAX_FILE) {
        free(buf);
        return NULL;
    }
    buf[*len] = '\0';
    return buf;
}

static const char *label_of(const cstl_avro_schema *s, char *buf, size_t size)
{
    return cstl_schema_label(cstl_avro_schema_root(s)->fullname, buf, size);
}

static version *current_of(vlist *tree, const char *fullname)
{
    for (size_t i = 0; i < tree->n; i++)
        if (tree->v[i].current &&
            strcmp(cstl_avro_schema_root(tree->v[i].schema)->fullname, fullname) == 0)
            return &tree->v[i];
    return NULL;
}

static bool in_tree(vlist *tree, uint64_t fp)
{
    for (size_t i = 0; i < tree->n; i++)
        if (cstl_avro_schema_fingerprint(tree->v[i].schema) == fp)
            return true;
    return false;
}

/* Loads the working tree's schemas; reports those that do not parse. */
static int load_tree(const char *root, vlist *tree, cstl_schema_report *rep)
{
    char *out = git_output(root, "ls-files -co --exclude-standard -- schemas/", NULL);
    if (!out) {
        fprintf(stderr, "schemas check: cannot list the files of \"%s\" with git\n", root);
        return -1;
    }
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        size_t n = strlen(line);
        if (n < 5 || strcmp(line + n - 5, ".avsc") != 0)
            continue;
        if (!valid_schema_path(line)) {
            cstl_schema_report_add(rep, "%s: invalid schema path", line);
            continue;
        }
        size_t len = 0;
        char *text = read_file(root, line, &len);
        if (!text)
            continue; /* listed by git but deleted in the working tree */
        cstl_error err;
        cstl_avro_schema *s = cstl_avro_schema_parse(text, len, &err);
        free(text);
        if (!s) {
            cstl_schema_report_add(rep, "%s: %s", line, err.message);
            continue;
        }
        if (cstl_avro_schema_root(s)->type != CSTL_AVRO_RECORD) {
            cstl_schema_report_add(rep, "%s: the schema is not a record", line);
            cstl_avro_schema_free(s);
            continue;
        }
        vlist_add(tree, (version){cstl_xstrdup(line), NULL, s, strstr(line, "/history/") == NULL});
    }
    free(out);
    return 0;
}

static void check_tree(vlist *tree, cstl_schema_report *rep)
{
    char label[256];
    for (size_t i = 0; i < tree->n; i++) {
        version *v = &tree->v[i];
        uint64_t fp = cstl_avro_schema_fingerprint(v->schema);
        for (size_t k = 0; k < i; k++)
            if (cstl_avro_schema_fingerprint(tree->v[k].schema) == fp)
                cstl_schema_report_add(rep, "%s and %s have the same fingerprint %016" PRIx64,
                                       tree->v[k].path, v->path, fp);
        const char *fullname = cstl_avro_schema_root(v->schema)->fullname;
        version *cur = current_of(tree, fullname);
        if (v->current && cur != v)
            cstl_schema_report_add(rep, "%s and %s are both current versions of \"%s\"", cur->path,
                                   v->path, fullname);
        if (!v->current && !cur)
            cstl_schema_report_add(rep, "%s: no current schema is named \"%s\"", v->path, fullname);
        if (!v->current && cur)
            cstl_schema_compat_check(cstl_avro_schema_root(cur->schema),
                                     cstl_avro_schema_root(v->schema),
                                     label_of(cur->schema, label, sizeof label), rep);
    }
}

static size_t history_count(vlist *tree, const char *fullname)
{
    size_t n = 0;
    for (size_t i = 0; i < tree->n; i++)
        if (!tree->v[i].current &&
            strcmp(cstl_avro_schema_root(tree->v[i].schema)->fullname, fullname) == 0)
            n++;
    return n;
}

/* Checks one version found in git history against the tree. */
static void check_past(vlist *tree, const version *past, cstl_schema_report *rep)
{
    char label[256];
    const cstl_avro_node *root = cstl_avro_schema_root(past->schema);
    label_of(past->schema, label, sizeof label);
    version *cur = current_of(tree, root->fullname);
    if (!cur) {
        cstl_schema_report_add(rep,
                               "%s: the type was deleted, but events written with it (%s "
                               "at commit %.12s) must stay readable",
                               label, past->path, past->commit);
        return;
    }
    uint64_t fp = cstl_avro_schema_fingerprint(past->schema);
    if (!in_tree(tree, fp)) {
        char suggest[512];
        const char *slash = strrchr(cur->path, '/');
        const char *ctx_end = strstr(cur->path, "/commands/");
        size_t dir = (size_t)((ctx_end ? ctx_end : slash) - cur->path);
        snprintf(suggest, sizeof suggest, "%.*s/history/%s/v%zu.avsc", (int)dir, cur->path,
                 root->name, history_count(tree, root->fullname) + 1);
        cstl_schema_report_add(rep,
                               "%s: the version of %s at commit %.12s (fingerprint %016" PRIx64
                               ") is missing from the tree; freeze it as %s",
                               label, past->path, past->commit, fp, suggest);
    }
    cstl_schema_compat_check(cstl_avro_schema_root(cur->schema), root, label, rep);
}

static int load_history(const char *root,
                        const char *against,
                        vlist *tree,
                        cstl_schema_report *rep,
                        size_t *n_commits,
                        size_t *n_versions)
{
    char args[512];
    char *head = git_output(root, "rev-parse --verify -q HEAD", NULL);
    if (!head && !against)
        return 0; /* a repository without commits has no history yet */
    free(head);
    if (against)
        snprintf(args, sizeof args, "log --format=%%H '%s..HEAD' -- schemas/", against);
    else
        snprintf(args, sizeof args, "log --format=%%H -- schemas/");
    char *commits = git_output(root, args, NULL);
    if (!commits) {
        fprintf(stderr, "schemas check: cannot read the git history of \"%s\"%s%s%s\n", root,
                against ? " from \"" : "", against ? against : "", against ? "\"" : "");
        return -1;
    }
    if (against) { /* REV itself too */
        snprintf(args, sizeof args, "rev-parse --verify '%s^{commit}'", against);
        char *rev = git_output(root, args, NULL);
        if (!rev) {
            free(commits);
            fprintf(stderr, "schemas check: unknown revision \"%s\"\n", against);
            return -1;
        }
        size_t n = strlen(commits);
        commits = cstl_xrealloc(commits, n + strlen(rev) + 2);
        strcat(commits, "\n");
        strcat(commits, rev);
        free(rev);
    }
    char **seen = NULL;
    size_t n_seen = 0;
    char *save1 = NULL;
    for (char *c = strtok_r(commits, "\n", &save1); c; c = strtok_r(NULL, "\n", &save1)) {
        if (!safe_chars(c, "") || strlen(c) < 40)
            continue;
        (*n_commits)++;
        snprintf(args, sizeof args, "ls-tree -r %s -- schemas/", c);
        char *listing = git_output(root, args, NULL);
        if (!listing)
            continue;
        char *save2 = NULL;
        for (char *l = strtok_r(listing, "\n", &save2); l; l = strtok_r(NULL, "\n", &save2)) {
            char mode[16], type[16], sha[64];
            const char *tab = strchr(l, '\t');
            if (!tab || sscanf(l, "%15s %15s %63s", mode, type, sha) != 3 ||
                strcmp(type, "blob") != 0 || !valid_schema_path(tab + 1) || !safe_chars(sha, ""))
                continue;
            bool dup = false;
            for (size_t i = 0; i < n_seen && !dup; i++)
                dup = strcmp(seen[i], sha) == 0;
            if (dup || n_seen >= MAX_VERSION)
                continue;
            seen = cstl_xrealloc(seen, (n_seen + 1) * sizeof(char *));
            seen[n_seen++] = cstl_xstrdup(sha);
            snprintf(args, sizeof args, "cat-file blob %s", sha);
            size_t len = 0;
            char *text = git_output(root, args, &len);
            if (!text)
                continue;
            cstl_error err;
            cstl_avro_schema *s = cstl_avro_schema_parse(text, len, &err);
            free(text);
            if (!s || cstl_avro_schema_root(s)->type != CSTL_AVRO_RECORD) {
                fprintf(stderr, "schemas check: warning: %s at commit %.12s does not parse: %s\n",
                        tab + 1, c, s ? "not a record" : err.message);
                cstl_avro_schema_free(s);
                continue;
            }
            version past = {cstl_xstrdup(tab + 1), cstl_xstrdup(c), s, false};
            (*n_versions)++;
            check_past(tree, &past, rep);
            free(past.path);
            free(past.commit);
            cstl_avro_schema_free(past.schema);
        }
        free(listing);
    }
    for (size_t i = 0; i < n_seen; i++)
        free(seen[i]);
    free(seen);
    free(commits);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: constellation schemas check [--against REV] [--root DIR]\n"
            "\n"
            "Checks every schema under schemas/: it parses, its fingerprint is unique, every\n"
            "version that ever existed in git history is still in the tree (current or frozen\n"
            "under schemas/<context>/history/<Name>/vN.avsc), and every current schema can\n"
            "read every earlier version (BACKWARD_TRANSITIVE).\n"
            "\n"
            "  --against REV  only consider history from REV to HEAD (REV included)\n"
            "  --root DIR     the repository (default: the one containing the current directory)\n"
            "\n"
            "exit status: 0 ok, 1 a check failed, 2 usage or environment error\n");
}

int cli_schemas(int argc, char **argv)
{
    const char *against = NULL, *root_arg = NULL;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "check") != 0) {
        fprintf(stderr, "schemas: unknown command \"%s\"\n", argv[1]);
        usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--against") == 0 && i + 1 < argc) {
            against = argv[++i];
        } else if (strcmp(argv[i], "--root") == 0 && i + 1 < argc) {
            root_arg = argv[++i];
        } else {
            fprintf(stderr, "schemas check: unknown or incomplete option \"%s\"\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (against && (!safe_chars(against, "/._~^-") || strlen(against) > 200)) {
        fprintf(stderr, "schemas check: invalid revision \"%s\"\n", against);
        return 2;
    }
    if (root_arg && (strchr(root_arg, '\'') || strlen(root_arg) > 900)) {
        fprintf(stderr, "schemas check: invalid root \"%s\"\n", root_arg);
        return 2;
    }
    char *root =
        root_arg ? cstl_xstrdup(root_arg) : git_output(".", "rev-parse --show-toplevel", NULL);
    if (!root) {
        fprintf(stderr, "schemas check: not inside a git repository\n");
        return 2;
    }
    root[strcspn(root, "\n")] = '\0';
    if (strchr(root, '\'')) {
        fprintf(stderr, "schemas check: invalid root \"%s\"\n", root);
        free(root);
        return 2;
    }
    vlist tree = {0};
    cstl_schema_report *rep = cstl_schema_report_new();
    size_t n_commits = 0, n_versions = 0;
    int status = 0;
    if (load_tree(root, &tree, rep) != 0) {
        status = 2;
    } else {
        check_tree(&tree, rep);
        if (load_history(root, against, &tree, rep, &n_commits, &n_versions) != 0)
            status = 2;
    }
    for (size_t i = 0; i < cstl_schema_report_count(rep) && cstl_schema_report_message(rep, i); i++)
        fprintf(stderr, "%s\n", cstl_schema_report_message(rep, i));
    if (status == 0 && cstl_schema_report_count(rep) > 0)
        status = 1;
    if (status == 0)
        printf("schemas check: %zu schemas ok, %zu versions from %zu commits checked\n", tree.n,
               n_versions, n_commits);
    else if (status == 1)
        fprintf(stderr, "schemas check: %zu problems\n", cstl_schema_report_count(rep));
    cstl_schema_report_free(rep);
    vlist_free(&tree);
    free(root);
    return status;
}
