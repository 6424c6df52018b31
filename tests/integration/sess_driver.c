/* A small libssh client for tests/integration/cap.sh: what stock ssh cannot do, send a
 * "signal" channel request (RFC 4254 section 6.9), and report the exit-status or
 * exit-signal that comes back.
 *
 * usage: sess_driver HOST PORT HOSTKEY.pub KEY CERT USER COMMAND SIGNAL
 *   Connects (checking the server key equals HOSTKEY.pub), logs in with KEY + CERT, runs
 *   COMMAND without a pty, waits for its first output line, sends SIGNAL, then prints the
 *   output, and "exit-status N" or "exit-signal NAME". Exit 0 when all of this happened.
 *   Each step is also logged on stderr with a monotonic time stamp. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libssh/callbacks.h>
#include <libssh/libssh.h>

struct result {
    int status;
    char signal[32];
};

static void on_exit_status(ssh_session s, ssh_channel ch, int status, void *arg)
{
    (void)s;
    (void)ch;
    ((struct result *)arg)->status = status;
}

static void on_exit_signal(ssh_session s, ssh_channel ch, const char *sig, int core,
                           const char *msg, const char *lang, void *arg)
{
    (void)s;
    (void)ch;
    (void)core;
    (void)msg;
    (void)lang;
    snprintf(((struct result *)arg)->signal, sizeof((struct result *)arg)->signal, "%s", sig);
}

static int fail(const char *what, ssh_session s)
{
    fprintf(stderr, "sess_driver: %s: %s\n", what, s != NULL ? ssh_get_error(s) : "");
    return 1;
}

/* Everything main holds, freed on every path (the ASan build checks for leaks). */
struct run {
    ssh_session s;
    ssh_key want, got, priv, cert;
    ssh_channel ch;
};

static void run_free(struct run *x)
{
    ssh_channel_free(x->ch);
    ssh_key_free(x->priv);
    ssh_key_free(x->cert);
    ssh_key_free(x->want);
    ssh_key_free(x->got);
    if (x->s != NULL) {
        ssh_disconnect(x->s);
        ssh_free(x->s);
    }
}

/* Progress on stderr with a monotonic time stamp, so a run that a timeout ends shows where
 * it stopped. */
static void step(const char *what)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    fprintf(stderr, "%lld.%03ld %s\n", (long long)t.tv_sec, t.tv_nsec / 1000000, what);
}

/* Connect, check the host key, log in with the certificate, run the command and signal it.
 * Returns the exit status for main. */
static int run(struct run *x, char **argv)
{
    x->s = ssh_new();
    int no = 0;
    unsigned port = (unsigned)strtoul(argv[2], NULL, 10);
    if (x->s == NULL || ssh_options_set(x->s, SSH_OPTIONS_PROCESS_CONFIG, &no) != SSH_OK ||
        ssh_options_set(x->s, SSH_OPTIONS_HOST, argv[1]) != SSH_OK ||
        ssh_options_set(x->s, SSH_OPTIONS_PORT, &port) != SSH_OK ||
        ssh_options_set(x->s, SSH_OPTIONS_USER, argv[6]) != SSH_OK) {
        return fail("options", x->s);
    }
    if (ssh_connect(x->s) != SSH_OK) {
        return fail("connect", x->s);
    }
    step("connected");
    if (ssh_pki_import_pubkey_file(argv[3], &x->want) != SSH_OK ||
        ssh_get_server_publickey(x->s, &x->got) != SSH_OK ||
        ssh_key_cmp(x->want, x->got, SSH_KEY_CMP_PUBLIC) != 0) {
        return fail("host key", x->s);
    }
    if (ssh_pki_import_privkey_file(argv[4], NULL, NULL, NULL, &x->priv) != SSH_OK ||
        ssh_pki_import_cert_file(argv[5], &x->cert) != SSH_OK ||
        ssh_pki_copy_cert_to_privkey(x->cert, x->priv) != SSH_OK) {
        return fail("key or certificate", x->s);
    }
    if (ssh_userauth_publickey(x->s, NULL, x->priv) != SSH_AUTH_SUCCESS) {
        return fail("authentication", x->s);
    }
    step("logged in");
    x->ch = ssh_channel_new(x->s);
    struct result res = {-1, ""};
    struct ssh_channel_callbacks_struct cb;
    memset(&cb, 0, sizeof cb);
    cb.userdata = &res;
    cb.channel_exit_status_function = on_exit_status;
    cb.channel_exit_signal_function = on_exit_signal;
    ssh_callbacks_init(&cb);
    if (x->ch == NULL || ssh_set_channel_callbacks(x->ch, &cb) != SSH_OK ||
        ssh_channel_open_session(x->ch) != SSH_OK ||
        ssh_channel_request_exec(x->ch, argv[7]) != SSH_OK) {
        return fail("session", x->s);
    }
    step("command sent");
    char out[4096];
    size_t n = 0;
    bool signalled = false;
    for (int i = 0; i < 200; i++) { /* bounded: 200 reads of at most 10 s each */
        int r = ssh_channel_read_timeout(x->ch, out + n, (uint32_t)(sizeof out - 1 - n), 0, 10000);
        if (r < 0) {
            return fail("read", x->s);
        }
        n += (size_t)r;
        out[n] = '\0';
        if (!signalled && strchr(out, '\n') != NULL) {
            if (ssh_channel_request_send_signal(x->ch, argv[8]) != SSH_OK) {
                return fail("signal", x->s);
            }
            signalled = true;
            step("signal sent");
        }
        if (r == 0 && ssh_channel_is_eof(x->ch)) {
            step("end of output");
            break;
        }
    }
    /* Let the exit request and CLOSE arrive: reads return at once after EOF, but this
     * processes packets until the exit status or CLOSE (libssh 0.10). */
    (void)ssh_channel_get_exit_status(x->ch);
    step("exit report");
    fputs(out, stdout);
    if (res.signal[0] != '\0') {
        printf("exit-signal %s\n", res.signal);
    } else {
        printf("exit-status %d\n", res.status);
    }
    return signalled ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: %s HOST PORT HOSTKEY.pub KEY CERT USER COMMAND SIGNAL\n", argv[0]);
        return 2;
    }
    struct run x = {0};
    int rc = run(&x, argv);
    run_free(&x);
    return rc;
}
