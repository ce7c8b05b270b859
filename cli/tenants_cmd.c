/*
 * tenants_cmd.c - `constellation tenants create NAME [--email E]`: bootstraps a tenant through
 * commands (CreateTenant, then IssueApiKey with role admin), like any other adapter (DESIGN §1.4),
 * and prints the tenant and its first admin key as one JSON object. The command handler must be
 * running (`constellation commands` runs it by default). Single-threaded.
 */
#include "cli/cli.h"
#include "commands/client.h"
#include "commands/rules.h"
#include "platform/auth.h"
#include "platform/id.h"

#include <jansson.h>

#include <stdio.h>
#include <string.h>

#define DEFAULT_EMAIL "admin@example.invalid"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: constellation tenants create NAME [--email EMAIL]\n\n"
            "Creates a tenant and its first admin API key through the command handler (which must\n"
            "be running: `constellation commands`), and prints one JSON object:\n"
            "  {\"tenant_id\":...,\"name\":...,\"api_key\":\"cstl_...\",\"key_id\":...,"
            "\"role\":\"admin\"}\n"
            "The key is shown only here. EMAIL is the tenant's contact (default %s).\n"
            "Waits CONSTELLATION_COMMAND_WAIT_MS for each outcome.\n",
            DEFAULT_EMAIL);
}

static int send_and_wait(cstl_cmd_client *client, const cstl_cmd_request *req, int wait_ms)
{
    cstl_cmd_reply reply;
    cstl_error err;
    int rc = cstl_cmd_client_send(client, req, wait_ms, &reply, &err);
    if (rc == CSTL_ETIMEDOUT) {
        fprintf(stderr,
                "constellation: tenants: no outcome for %s \"%s\" within %d ms: is the command "
                "handler running (`constellation commands`)?\n",
                req->command_type, req->command_id, wait_ms);
        return CLI_EXIT_FAILURE;
    }
    if (rc != 0) {
        fprintf(stderr, "constellation: tenants: cannot send %s: %s\n", req->command_type,
                err.message);
        return CLI_EXIT_FAILURE;
    }
    if (reply.outcome != CSTL_CMD_ACCEPTED && reply.outcome != CSTL_CMD_DUPLICATE) {
        fprintf(stderr, "constellation: tenants: %s was %s: %s (%s)\n", req->command_type,
                cstl_cmd_outcome_name(reply.outcome), reply.error_message, reply.error_code);
        return reply.outcome == CSTL_CMD_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
    }
    return 0;
}

static int tenants_create(const char *name, const char *email)
{
    cstl_config cfg;
    int rc = cli_load_config(&cfg);
    if (rc != 0)
        return rc;
    cstl_error err;
    cstl_cmd_client_options co = {.brokers = cfg.kafka_brokers,
                                  .instance_id = cfg.instance_id,
                                  .timeout_ms = cfg.kafka_timeout_ms};
    cstl_cmd_client *client = cstl_cmd_client_new(&co, &err);
    if (client == NULL) {
        fprintf(stderr, "constellation: tenants: cannot reach kafka at %s: %s\n", cfg.kafka_brokers,
                err.message);
        return CLI_EXIT_FAILURE;
    }
    char tenant_id[37], command_id[37];
    cstl_uuid_v7_string(tenant_id);
    json_t *create =
        json_pack("{s:s,s:s,s:s}", "tenant_id", tenant_id, "name", name, "contact_email", email);
    cstl_decision d = {0};
    if (cstl_command_validate("tenants", "CreateTenant", create, &d) != 0) {
        fprintf(stderr, "constellation: tenants create: %s\n", d.message);
        cstl_decision_clear(&d);
        json_decref(create);
        cstl_cmd_client_free(client);
        return CLI_EXIT_USAGE;
    }
    cstl_cmd_request req = {.context = "tenants",
                            .command_type = "CreateTenant",
                            .command_id = cstl_uuid_v7_string(command_id),
                            .tenant_id = tenant_id,
                            .aggregate_id = tenant_id,
                            .expected_version = -1,
                            .issued_by = "cli:tenants-create",
                            .payload = create,
                            .want_reply = 1};
    rc = send_and_wait(client, &req, cfg.command_wait_ms);
    json_decref(create);
    if (rc != 0) {
        cstl_cmd_client_free(client);
        return rc;
    }

    char key[CSTL_API_KEY_LEN + 1], key_id[37], hash[65];
    if (cstl_api_key_generate(key, sizeof(key), key_id, hash) != 0) {
        fprintf(stderr, "constellation: tenants: cannot generate an api key\n");
        cstl_cmd_client_free(client);
        return CLI_EXIT_FAILURE;
    }
    json_t *issue = json_pack("{s:s,s:s,s:s,s:s,s:n}", "tenant_id", tenant_id, "key_id", key_id,
                              "key_hash", hash, "role", "admin", "expires_at");
    req.command_type = "IssueApiKey";
    req.command_id = cstl_uuid_v7_string(command_id);
    req.payload = issue;
    rc = send_and_wait(client, &req, cfg.command_wait_ms);
    json_decref(issue);
    cstl_cmd_client_free(client);
    if (rc != 0)
        return rc;
    json_t *out = json_pack("{s:s,s:s,s:s,s:s,s:s}", "tenant_id", tenant_id, "name", name,
                            "api_key", key, "key_id", key_id, "role", "admin");
    char *text = json_dumps(out, JSON_COMPACT);
    printf("%s\n", text);
    free(text);
    json_decref(out);
    return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}

int cli_tenants(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (argc < 2 || strcmp(argv[1], "create") != 0) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = NULL;
    const char *email = DEFAULT_EMAIL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--email") == 0 && i + 1 < argc) {
            email = argv[++i];
        } else if (strncmp(argv[i], "--email=", 8) == 0) {
            email = argv[i] + 8;
        } else if (argv[i][0] != '-' && name == NULL) {
            name = argv[i];
        } else {
            fprintf(stderr, "constellation: tenants create: unexpected argument \"%s\"\n", argv[i]);
            return CLI_EXIT_USAGE;
        }
    }
    if (name == NULL) {
        fprintf(stderr, "constellation: tenants create: missing the tenant's NAME\n");
        return CLI_EXIT_USAGE;
    }
    return tenants_create(name, email);
}
