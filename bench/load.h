/*
 * load.h - an HTTP load generator for the service benchmarks: keep-alive connections on loopback,
 * each with one request in flight, in a closed loop (the next request as soon as the answer came)
 * or an open loop at a fixed rate.
 *
 * In the open loop every request has a scheduled send time (start + i / rate) and its latency is
 * measured from that time, so a server that stalls is charged for the requests it delayed (no
 * coordinated omission).
 */
#ifndef CSTL_BENCH_LOAD_H
#define CSTL_BENCH_LOAD_H

#include <netinet/in.h>
#include <stddef.h>

#define BENCH_LOAD_MAX_CONNS 1024

/* Called from a connection's thread for each 201 answer: its body (not NUL-terminated in the
 * stream, but terminated here), the scheduled send time and the time the answer was complete
 * (bench_now_s clock). Must be thread-safe. */
typedef void (*bench_load_fn)(
    void *ud, const char *body, size_t len, double scheduled, double done);

typedef struct bench_load_opts {
    struct sockaddr_in addr;
    const char *request; /* the whole HTTP/1.1 request, sent as is */
    size_t request_len;
    double rate;       /* requests/s over all connections; 0 = closed loop */
    double duration;   /* seconds */
    long max_requests; /* stop after this many requests were sent; 0 = no limit */
    int conns;         /* 1 .. BENCH_LOAD_MAX_CONNS */
    bench_load_fn on_created;
    void *ud;
} bench_load_opts;

typedef struct bench_load_result {
    long ok;     /* 201 answers */
    long errors; /* other answers, broken connections */
    double ok_per_s, p50_ms, p99_ms, elapsed_s;
} bench_load_result;

/* Runs the load to its end (duration or max_requests). */
bench_load_result bench_load_run(const bench_load_opts *o);

/* "host:port" of a loopback service into *out. Returns 0, or -1 when it is not an IPv4 address
 * and port. */
int bench_load_addr(const char *hostport, struct sockaddr_in *out);

/* Monotonic seconds. */
double bench_now_s(void);

#endif
