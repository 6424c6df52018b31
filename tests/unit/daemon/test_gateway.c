/* The gateway's admission policy (core/daemon/gateway.c), through the router's inbound hook
 * as an SSH session's direct-tcpip request reaches it: who may register, who may ask for a
 * relayed stream and for which names, who may hand this node relayed sessions, what a
 * disabled or stopped gateway refuses, the refused count, and a reload that changes the
 * gateway list. The sessions themselves (registration, splices, punches) are covered by
 * tests/integration/nat.sh and punch.sh with real daemons. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/daemon/gateway.h"
#include "core/daemon/router.h"
#include "identity/derive.h"
#include "proto/mesh.h"
#include "proto/relay_msg.h"

/* Keys: a node allowed to register (relay = true), a peer without relay, a peer with relay
 * but allow = false, this node's gateway, and a stranger. */
enum { RELAYER, PLAIN, BLOCKED, GW, STRANGER, N_KEYS };

struct fix {
    uv_loop_t loop;
    struct km_key *keys[N_KEYS];
    char ids[N_KEYS][KM_NODE_ID_LEN + 1];
    struct km_config *cfg;
    struct km_key *self;
    struct km_router *r;
    struct km_gateway *g;
    struct km_ssh_hooks h;
    int changed;
};

static const struct km_pubkey *pub(const struct fix *f, int i)
{
    return km_key_pub(f->keys[i]);
}

static void on_changed(void *arg)
{
    ((struct fix *)arg)->changed++;
}

/* Parse text into a fresh configuration; NULL (and the error printed) if it does not parse. */
static struct km_config *parse(const char *text)
{
    struct km_config *c = malloc(sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    km_config_defaults(c);
    char err[KM_CONF_ERR_LEN];
    if (km_config_parse(c, text, strlen(text), "gw.conf", err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        free(c);
        return NULL;
    }
    return c;
}

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof *f);
    if (f == NULL || uv_loop_init(&f->loop) != 0 || km_key_generate(&f->self) != 0) {
        return -1;
    }
    for (int i = 0; i < N_KEYS; i++) {
        if (km_key_generate(&f->keys[i]) != 0) {
            return -1;
        }
        km_node_id(pub(f, i), f->ids[i]);
    }
    char text[2048];
    snprintf(text, sizeof text,
             "[gateway]\nenabled = on\nmax_streams = 2\n"
             "[peer relayer]\nnode = %s\nrelay = true\n"
             "[peer plain]\nnode = %s\n"
             "[peer blocked]\nnode = %s\nrelay = true\nallow = false\n"
             "[peer gw]\nnode = %s\naddress = 192.0.2.1:15022\n"
             "[nat]\ngateway = gw\n",
             f->ids[RELAYER], f->ids[PLAIN], f->ids[BLOCKED], f->ids[GW]);
    if ((f->cfg = parse(text)) == NULL ||
        km_router_new(&f->loop, f->cfg, km_key_pub(f->self), &f->r) != 0 ||
        km_gateway_new(&f->loop, f->cfg, f->r, on_changed, f, &f->g) != 0) {
        return -1;
    }
    /* No SSH node and no mesh: the hooks are installed, and no registration is attempted. */
    km_gateway_start(f->g, NULL, NULL);
    km_router_ssh_hooks(f->r, &f->h);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    km_gateway_stop(f->g);
    (void)uv_run(&f->loop, UV_RUN_DEFAULT);
    km_gateway_free(f->g);
    km_router_free(f->r);
    (void)uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N_KEYS; i++) {
        km_key_free(f->keys[i]);
    }
    km_key_free(f->self);
    free(f->cfg);
    int r = uv_loop_close(&f->loop);
    free(f);
    return r;
}

static int ask(const struct fix *f, int who, const char *host)
{
    return f->h.allow_direct(f->h.arg, pub(f, who), NULL, host, 1);
}

static uint64_t refused(const struct fix *f)
{
    struct km_gateway_stats st;
    km_gateway_stats(f->g, &st);
    return st.refused;
}

static void test_registration(void **state)
{
    struct fix *f = *state;
    assert_int_equal(ask(f, RELAYER, KM_RELAY_REGISTER_HOST), 0);
    assert_int_equal(refused(f), 0);
    /* Not a [peer] with relay = true and allow = true. */
    assert_int_equal(ask(f, PLAIN, KM_RELAY_REGISTER_HOST), KM_ERR_REFUSED);
    assert_int_equal(ask(f, BLOCKED, KM_RELAY_REGISTER_HOST), KM_ERR_REFUSED);
    assert_int_equal(ask(f, STRANGER, KM_RELAY_REGISTER_HOST), KM_ERR_REFUSED);
    assert_int_equal(refused(f), 3);
    /* allow_unknown lets strangers open streams to this node, not register with it. */
    f->cfg->allow_unknown = true;
    assert_int_equal(ask(f, STRANGER, KM_RELAY_REGISTER_HOST), KM_ERR_REFUSED);
    f->cfg->allow_unknown = false;
    /* A node that is no gateway refuses every gateway request, and counts them. */
    f->cfg->gateway_enabled = false;
    assert_int_equal(ask(f, RELAYER, KM_RELAY_REGISTER_HOST), KM_ERR_REFUSED);
    assert_int_equal(refused(f), 5);
}

static void test_relay_requests(void **state)
{
    struct fix *f = *state;
    char host[128];
    /* A well-formed request for a node that has not registered here. */
    snprintf(host, sizeof host, "%s%s", f->ids[PLAIN], KM_MESH_RELAY_SUFFIX);
    assert_int_equal(ask(f, RELAYER, host), KM_ERR_REFUSED);
    /* Malformed targets: no node ID, one too short or too long, an upper-case ID. */
    static const char *const bad[] = {
        KM_MESH_RELAY_SUFFIX,
        "x.relay@keymesh",
        "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhken.relay@keymesh",
        "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenaa.relay@keymesh",
        "25NJQAMCWEFLPVKL73J4SZAHHIHOC4XT3KTCGJNPAINGR5YHKENA.relay@keymesh",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ask(f, RELAYER, bad[i]), KM_ERR_REFUSED);
    }
    assert_int_equal(refused(f), 1 + sizeof bad / sizeof bad[0]);
    /* Not under "@keymesh" at all: no gateway request, so the router's own policy refuses it
     * (no exit for this peer) and the gateway does not count it. */
    assert_int_equal(ask(f, RELAYER,
                         "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena"
                         ".relay@keymeshx"),
                     KM_ERR_REFUSED);
    assert_int_equal(refused(f), 1 + sizeof bad / sizeof bad[0]);
    /* Who asks matters before the target does: allow = false, and a stranger unless
     * allow_unknown. */
    uint64_t before = refused(f);
    assert_int_equal(ask(f, BLOCKED, host), KM_ERR_REFUSED);
    assert_int_equal(ask(f, STRANGER, host), KM_ERR_REFUSED);
    assert_int_equal(refused(f), before + 2);
}

static void test_relayed_sessions(void **state)
{
    struct fix *f = *state;
    /* Only the gateway this node registers with may hand it relayed sessions, and it may do
     * so even when this node is no gateway itself. */
    assert_int_equal(ask(f, GW, KM_RELAY_RELAYED_HOST), 0);
    f->cfg->gateway_enabled = false;
    assert_int_equal(ask(f, GW, KM_RELAY_RELAYED_HOST), 0);
    assert_int_equal(ask(f, RELAYER, KM_RELAY_RELAYED_HOST), KM_ERR_REFUSED);
    assert_int_equal(ask(f, STRANGER, KM_RELAY_RELAYED_HOST), KM_ERR_REFUSED);
    assert_int_equal(refused(f), 0); /* not a gateway-role refusal */
}

static void test_stats_and_reload(void **state)
{
    struct fix *f = *state;
    struct km_gateway_stats st;
    km_gateway_stats(f->g, &st);
    assert_int_equal(st.gateways, 1);
    assert_int_equal(st.registered, 0);
    assert_false(st.has_reflexive);
    assert_int_equal(st.nodes, 0);
    assert_int_equal(st.relayed, 0);
    struct km_pubkey keys[4];
    struct sockaddr_storage addrs[4];
    assert_int_equal(km_gateway_registered(f->g, keys, addrs, 4), 0); /* none open */
    km_gateway_stats(NULL, &st);
    assert_int_equal(st.gateways, 0);
    assert_int_equal(km_gateway_registered(NULL, keys, addrs, 4), 0);

    /* A reload naming the gateway by node ID, and RELAYER as a second one: the list
     * follows, the old gateway keeps its right to hand over relayed sessions, the new one
     * gains it, and the owner hears of the change. */
    char text[1024];
    snprintf(text, sizeof text,
             "[peer relayer]\nnode = %s\nrelay = true\n"
             "[nat]\ngateway = %s\ngateway = relayer\n",
             f->ids[RELAYER], f->ids[GW]);
    struct km_config *c2 = parse(text);
    assert_non_null(c2);
    km_gateway_set_config(f->g, c2);
    assert_int_equal(f->changed, 1);
    km_gateway_stats(f->g, &st);
    assert_int_equal(st.gateways, 2);
    assert_int_equal(ask(f, GW, KM_RELAY_RELAYED_HOST), 0);
    assert_int_equal(ask(f, RELAYER, KM_RELAY_RELAYED_HOST), 0);
    /* c2 has no [gateway] section: the gateway role is off with it. */
    assert_int_equal(ask(f, RELAYER, KM_RELAY_REGISTER_HOST), KM_ERR_REFUSED);
    km_gateway_set_config(f->g, f->cfg); /* back, before c2 goes */
    assert_int_equal(f->changed, 2);
    free(c2);
    km_gateway_stats(f->g, &st);
    assert_int_equal(st.gateways, 1);
    assert_int_equal(ask(f, RELAYER, KM_RELAY_RELAYED_HOST), KM_ERR_REFUSED);
    assert_int_equal(ask(f, RELAYER, KM_RELAY_REGISTER_HOST), 0);
}

static void test_stopped(void **state)
{
    struct fix *f = *state;
    km_gateway_stop(f->g);
    km_gateway_stop(f->g); /* twice is harmless */
    /* The router no longer has a gateway to ask: every gateway request is refused. */
    assert_int_equal(ask(f, RELAYER, KM_RELAY_REGISTER_HOST), KM_ERR_REFUSED);
    assert_int_equal(ask(f, GW, KM_RELAY_RELAYED_HOST), KM_ERR_REFUSED);
    km_gateway_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relayed_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_and_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopped, setup, teardown),
    };
    return cmocka_run_group_tests_name("gateway", tests, NULL, NULL);
}
