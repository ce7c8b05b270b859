/*
 * schemas.h - `constellation schemas check [--against REV] [--root DIR]`.
 *
 * Checks the schemas under schemas/: every .avsc parses, fingerprints are unique, each full name
 * has one current schema (schemas/<context>/[commands/]<Name>.avsc) whose frozen earlier versions
 * live in schemas/<context>/history/<Name>/v<N>.avsc, every version that ever existed in git
 * history is still in the tree (so its fingerprint stays resolvable), and every current schema
 * can read every earlier version (BACKWARD_TRANSITIVE). Exit status: 0 ok, 1 a check failed (each
 * failure printed to stderr), 2 usage or environment error.
 */
#ifndef CSTL_CLI_SCHEMAS_H
#define CSTL_CLI_SCHEMAS_H

int cli_schemas(int argc, char **argv);

#endif
