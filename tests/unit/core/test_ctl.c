/* Control socket: the pure request parser (table of hostile lines), and a real server on a
 * real loop with a blocking client in a second thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/ctl.h"

struct req_case {
    const char *line;
    int expect;
    const char *cmd;
};

static const struct req_case req_cases[] = {
    {"{\"cmd\":\"status\"}", 0, "status"},
    {"{\"cmd\":\"a-1\",\"x\":[1,2,{}]}", 0, "a-1"},
    {"  {\"cmd\" : \"ping\"}  ", 0, "ping"},
    {"", KM_ERR_INVALID, NULL},
    {"{", KM_ERR_INVALID, NULL},
    {"[]", KM_ERR_INVALID, NULL},
    {"\"status\"", KM_ERR_INVALID, NULL},
    {"{}", KM_ERR_INVALID, NULL},
    {"{\"cmd\":1}", KM_ERR_INVALID, NULL},
    {"{\"cmd\":\"\"}", KM_ERR_INVALID, NULL},
    {"{\"cmd\":\"Status\"}", KM_ERR_INVALID, NULL},
    {"{\"cmd\":\"st atus\"}", KM_ERR_INVALID, NULL},
    {"{\"cmd\":\"st\\u0000atus\"}", KM_ERR_INVALID, NULL},
    {"{\"cmd\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", KM_ERR_INVALID, NULL}, /* 33 chars */
    {"{\"cmd\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", 0, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
    {"{\"cmd\":\"a\",\"cmd\":\"b\"}", KM_ERR_INVALID, NULL},
    {"{\"cmd\":\"a\"} {\"cmd\":\"b\"}", KM_ERR_INVALID, NULL},
    {"{\"cmd\":\"a\"}\n", 0, "a"},
    {"{\"cmd\":\"\xff\"}", KM_ERR_INVALID, NULL},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof req_cases / sizeof req_cases[0]; i++) {
        const struct req_case *c = &req_cases[i];
        json_t *req = (json_t *)1;
        const char *cmd = "x";
        int r = km_ctl_parse_request((const uint8_t *)c->line, strlen(c->line), &req, &cmd);
        if (r != c->expect) {
            fail_msg("case %zu '%s': got %d want %d", i, c->line, r, c->expect);
        }
        if (r == 0) {
            assert_string_equal(cmd, c->cmd);
            json_decref(req);
        } else {
            assert_null(req);
            assert_null(cmd);
        }
    }
    static uint8_t big[KM_CTL_MAX_LINE + 1];
    json_t *req;
    const char *cmd;
    assert_int_equal(km_ctl_parse_request(big, sizeof big, &req, &cmd), KM_ERR_TOO_LARGE);
}

/* ---- live server ---- */

struct fixture {
    char dir[64];
    char sock[128];
    uv_loop_t loop;
    uv_poll_t done;
    int result_fd;
    struct km_ctl_server *srv;
    int calls;
    int client_result;
};

static json_t *handler(void *arg, const char *cmd, const json_t *req, struct km_ctl_conn *conn)
{
    (void)conn;
    struct fixture *f = arg;
    f->calls++;
    if (strcmp(cmd, "echo") == 0) {
        return json_pack("{s:O}", "got", json_object_get(req, "v"));
    }
    if (strcmp(cmd, "null") == 0) {
        return NULL;
    }
    return json_pack("{s:b, s:s}", "ok", 0, "error", "nope");
}

/* The client runs in a child process (threads misbehave under qemu-user); it reports its
 * result byte through a pipe that the loop watches. */
static void on_done(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    struct fixture *f = h->data;
    uint8_t r = 0xff;
    f->client_result = read(f->result_fd, &r, 1) == 1 ? r : 0xff;
    km_ctl_server_close(f->srv);
    uv_close((uv_handle_t *)h, NULL);
}

static int raw_exchange(const char *sock, const char *send_bytes, size_t n, char *reply,
                        size_t replysz)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(fd, send_bytes + off, n - off, MSG_NOSIGNAL);
        if (w <= 0) {
            break; /* the server may hang up on an oversized line */
        }
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, reply + got, replysz - 1 - got, 0);
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
        if (got >= replysz - 1) {
            break;
        }
    }
    reply[got] = '\0';
    close(fd);
    return (int)got;
}

static void client_thread(void *arg)
{
    struct fixture *f = arg;
    int bad = 0;
    json_t *reply;
    /* 1. echo */
    json_t *req = json_pack("{s:s, s:i}", "cmd", "echo", "v", 42);
    if (km_ctl_call(f->sock, req, &reply, 2000) != 0 ||
        !json_is_true(json_object_get(reply, "ok")) ||
        json_integer_value(json_object_get(reply, "got")) != 42) {
        bad |= 1;
    }
    json_decref(reply);
    json_decref(req);
    /* 2. handler refusal passes through with its own "ok": false */
    req = json_pack("{s:s}", "cmd", "other");
    if (km_ctl_call(f->sock, req, &reply, 2000) != 0 ||
        !json_is_false(json_object_get(reply, "ok"))) {
        bad |= 2;
    }
    json_decref(reply);
    json_decref(req);
    /* 3. handler failure becomes "internal error" */
    req = json_pack("{s:s}", "cmd", "null");
    if (km_ctl_call(f->sock, req, &reply, 2000) != 0 ||
        strcmp(json_string_value(json_object_get(reply, "error")), "internal error") != 0) {
        bad |= 4;
    }
    json_decref(reply);
    json_decref(req);
    /* 4. malformed line gets an error reply, and a good line after it on the same
     *    connection still works (two replies). */
    char buf[4096];
    const char two[] = "garbage\n{\"cmd\":\"echo\",\"v\":1}\n";
    raw_exchange(f->sock, two, sizeof two - 1, buf, sizeof buf);
    if (strstr(buf, "malformed request") == NULL || strstr(buf, "\"got\":1") == NULL) {
        bad |= 8;
    }
    /* 5. a line over the limit is refused and the connection closed */
    size_t n = KM_CTL_MAX_LINE + 100;
    char *big = malloc(n);
    memset(big, 'a', n);
    raw_exchange(f->sock, big, n, buf, sizeof buf);
    free(big);
    if (strstr(buf, "request too large") == NULL) {
        bad |= 16;
    }
    /* 6. nobody listening */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none", f->dir);
    req = json_pack("{s:s}", "cmd", "echo");
    if (km_ctl_call(missing, req, &reply, 500) != KM_ERR_NOT_RUNNING || reply != NULL) {
        bad |= 32;
    }
    json_decref(req);
    f->client_result = bad;
}

static void test_server(void **state)
{
    (void)state;
    struct fixture f = {0};
    snprintf(f.dir, sizeof f.dir, "/tmp/km-ctl-XXXXXX");
    assert_non_null(mkdtemp(f.dir));
    snprintf(f.sock, sizeof f.sock, "%s/control.sock", f.dir);
    assert_int_equal(uv_loop_init(&f.loop), 0);
    assert_int_equal(km_ctl_server_new(&f.loop, f.sock, handler, &f, &f.srv), 0);
    struct stat st;
    assert_int_equal(stat(f.sock, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* A second server on the same path fails and cleans up after itself. */
    struct km_ctl_server *dup;
    assert_int_not_equal(km_ctl_server_new(&f.loop, f.sock, handler, &f, &dup), 0);
    assert_null(dup);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        client_thread(&f);
        uint8_t r = (uint8_t)f.client_result;
        _exit(write(pfd[1], &r, 1) == 1 ? 0 : 1);
    }
    close(pfd[1]);
    f.result_fd = pfd[0];
    assert_int_equal(uv_poll_init(&f.loop, &f.done, pfd[0]), 0);
    f.done.data = &f;
    assert_int_equal(uv_poll_start(&f.done, UV_READABLE, on_done), 0);
    assert_int_equal(uv_run(&f.loop, UV_RUN_DEFAULT), 0);
    int wst;
    assert_int_equal(waitpid(child, &wst, 0), child);
    close(pfd[0]);
    assert_int_equal(f.client_result, 0);
    /* The handler ran in this process: echo, other, null, and the echo after garbage. */
    assert_int_equal(f.calls, 4);
    /* Closing removed the socket file and every handle. */
    assert_int_not_equal(access(f.sock, F_OK), 0);
    assert_int_equal(uv_loop_close(&f.loop), 0);
    rmdir(f.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
