/* The daemon object: owns the loop, the configuration, the node key and every service, and
 * wires the layers together. Only this folder knows all layers (DESIGN.md section 1). */
#ifndef KM_DAEMON_DAEMON_H
#define KM_DAEMON_DAEMON_H

#include <stdbool.h>

#include "core/log.h"

struct km_daemon_opts {
    const char *dir;         /* state directory (created 0700 if missing) */
    const char *config_path; /* INI file */
    bool config_explicit;    /* the user named config_path: a missing file is an error */
    bool log_level_set;      /* log_level overrides the config file's [log] level */
    enum km_log_level log_level;
    bool tun; /* --tun: as [tun] enabled = true */
};

/* Run the daemon in the foreground until SIGINT or SIGTERM. Logs to stderr. Returns the
 * process exit status: 0 after a clean shutdown with every handle closed, 1 on a start-up
 * error (already logged) or when handles leaked at shutdown. */
int km_daemon_run(const struct km_daemon_opts *opts);

#endif
