/*
 * logagent.sinks.kafka._batchproduce: a librdkafka producer driven a batch at a time.
 *
 * confluent-kafka's Producer costs one Python call per message on the way in (produce()) and one
 * on the way back (the delivery callback, with a Message object built for it). This module owns a
 * librdkafka producer of its own and changes both ends, nothing between them:
 *   - produce(topic, key, values, start, token) hands every bytes object of a list from `start`
 *     to librdkafka (one key: one partition, in order) in one call, and stops where librdkafka's
 *     queue is full, as produce() raising BufferError did;
 *   - the delivery reports are taken in C, inside poll(), and folded: consecutive successes of one
 *     batch (its `token`) become one (token, n, 0, None) tuple; a failure is one
 *     (token, 1, err, value) tuple, the value kept for a message the broker refused for its size.
 * Errors and librdkafka's log lines (log.queue: served by poll as well) come back from poll() as
 * tuples too; the Python side hands them to the sink's handlers. No Python code runs in
 * librdkafka's threads: its callbacks only append to C buffers.
 *
 * librdkafka is the one confluent-kafka ships (its path is given to Producer()), opened with
 * dlopen: no headers or link-time library needed, and always the version confluent-kafka runs.
 * The declarations below are librdkafka's stable C ABI (rdkafka.h).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ librdkafka's ABI */

typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_topic_s rd_kafka_topic_t;
typedef struct rd_kafka_conf_s rd_kafka_conf_t;
typedef struct rd_kafka_queue_s rd_kafka_queue_t;

typedef struct {
    int err;
    rd_kafka_topic_t *rkt;
    int32_t partition;
    void *payload;
    size_t len;
    void *key;
    size_t key_len;
    int64_t offset;
    void *_private;
} rk_message_t;

typedef struct { int32_t id; char *host; int port; } rk_md_broker_t;
typedef struct {
    int32_t id; int err; int32_t leader; int replica_cnt; int32_t *replicas; int isr_cnt; int32_t *isrs;
} rk_md_partition_t;
typedef struct { char *topic; int partition_cnt; rk_md_partition_t *partitions; int err; } rk_md_topic_t;
typedef struct {
    int broker_cnt; rk_md_broker_t *brokers; int topic_cnt; rk_md_topic_t *topics;
    int32_t orig_broker_id; char *orig_broker_name;
} rk_metadata_t;

#define RK_PRODUCER 0
#define RK_CONF_OK 0
#define RK_PARTITION_UA (-1)
#define RK_MSG_F_COPY 0x2
#define RK_ERR_QUEUE_FULL (-184)
#define RK_ERR_FATAL (-150)
#define RK_ERR_MSG_SIZE_TOO_LARGE 10

#define RELEASE_FROM 32  /* produce() releases the GIL for batches of this many messages or more */

typedef void (*dr_msg_cb_t)(rd_kafka_t *, const rk_message_t *, void *);
typedef void (*error_cb_t)(rd_kafka_t *, int, const char *, void *);
typedef void (*log_cb_t)(const rd_kafka_t *, int, const char *, const char *);

static struct {
    rd_kafka_conf_t *(*conf_new)(void);
    int (*conf_set)(rd_kafka_conf_t *, const char *, const char *, char *, size_t);
    void (*conf_set_dr_msg_cb)(rd_kafka_conf_t *, dr_msg_cb_t);
    void (*conf_set_error_cb)(rd_kafka_conf_t *, error_cb_t);
    void (*conf_set_log_cb)(rd_kafka_conf_t *, log_cb_t);
    void (*conf_set_opaque)(rd_kafka_conf_t *, void *);
    void (*conf_destroy)(rd_kafka_conf_t *);
    rd_kafka_t *(*new_)(int, rd_kafka_conf_t *, char *, size_t);
    void (*destroy)(rd_kafka_t *);
    rd_kafka_topic_t *(*topic_new)(rd_kafka_t *, const char *, void *);
    void (*topic_destroy)(rd_kafka_topic_t *);
    int (*produce)(rd_kafka_topic_t *, int32_t, int, void *, size_t, const void *, size_t, void *);
    int (*last_error)(void);
    int (*poll)(rd_kafka_t *, int);
    int (*flush)(rd_kafka_t *, int);
    int (*outq_len)(rd_kafka_t *);
    int (*fatal_error)(rd_kafka_t *, char *, size_t);
    void *(*opaque)(const rd_kafka_t *);
    const char *(*name)(const rd_kafka_t *);
    int (*set_log_queue)(rd_kafka_t *, rd_kafka_queue_t *);
    int (*metadata)(rd_kafka_t *, int, rd_kafka_topic_t *, const rk_metadata_t **, int);
    void (*metadata_destroy)(const rk_metadata_t *);
} rk;

static void *rk_lib = NULL;

static int load_librdkafka(const char *path) {
    if (rk_lib != NULL)
        return 0;
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        PyErr_Format(PyExc_ImportError, "cannot open librdkafka at %s: %s", path, dlerror());
        return -1;
    }
#define SYM(field, name)                                                                   \
    do {                                                                                   \
        *(void **)(&rk.field) = dlsym(lib, name);                                          \
        if (rk.field == NULL) {                                                            \
            PyErr_Format(PyExc_ImportError, "librdkafka at %s has no %s", path, name);     \
            dlclose(lib);                                                                  \
            return -1;                                                                     \
        }                                                                                  \
    } while (0)
    SYM(conf_new, "rd_kafka_conf_new");
    SYM(conf_set, "rd_kafka_conf_set");
    SYM(conf_set_dr_msg_cb, "rd_kafka_conf_set_dr_msg_cb");
    SYM(conf_set_error_cb, "rd_kafka_conf_set_error_cb");
    SYM(conf_set_log_cb, "rd_kafka_conf_set_log_cb");
    SYM(conf_set_opaque, "rd_kafka_conf_set_opaque");
    SYM(conf_destroy, "rd_kafka_conf_destroy");
    SYM(new_, "rd_kafka_new");
    SYM(destroy, "rd_kafka_destroy");
    SYM(topic_new, "rd_kafka_topic_new");
    SYM(topic_destroy, "rd_kafka_topic_destroy");
    SYM(produce, "rd_kafka_produce");
    SYM(last_error, "rd_kafka_last_error");
    SYM(poll, "rd_kafka_poll");
    SYM(flush, "rd_kafka_flush");
    SYM(outq_len, "rd_kafka_outq_len");
    SYM(fatal_error, "rd_kafka_fatal_error");
    SYM(opaque, "rd_kafka_opaque");
    SYM(name, "rd_kafka_name");
    SYM(set_log_queue, "rd_kafka_set_log_queue");
    SYM(metadata, "rd_kafka_metadata");
    SYM(metadata_destroy, "rd_kafka_metadata_destroy");
#undef SYM
    rk_lib = lib;
    return 0;
}

/* ------------------------------------------------------------------ what the callbacks collect */

typedef struct {
    intptr_t token;
    Py_ssize_t n;
    int err;
    char *value;  /* a copy, only for a message refused for its size */
    size_t len;
} report_t;

typedef struct {
    int kind;  /* 0: error, 1: log line */
    int code;  /* error code, or log level */
    int fatal;
    char *text;  /* reason, or "FAC [producer name] message" as confluent-kafka's log lines */
} event_t;

typedef struct {
    pthread_mutex_t lock;
    report_t *reports;
    size_t n_reports, cap_reports;
    event_t *events;
    size_t n_events, cap_events;
    int oom;  /* an allocation failed in a callback: poll() raises MemoryError */
} inbox_t;

static int grow(void **items, size_t *cap, size_t need, size_t size) {
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap * 2 : 256;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(*items, cap2 * size);
    if (p == NULL)
        return -1;
    *items = p;
    *cap = cap2;
    return 0;
}

static void on_delivery(rd_kafka_t *rkh, const rk_message_t *m, void *opaque) {
    inbox_t *in = (inbox_t *)opaque;
    intptr_t token = (intptr_t)m->_private;
    pthread_mutex_lock(&in->lock);
    if (m->err == 0 && in->n_reports > 0) {
        report_t *last = &in->reports[in->n_reports - 1];
        if (last->token == token && last->err == 0) {
            last->n++;
            pthread_mutex_unlock(&in->lock);
            return;
        }
    }
    if (grow((void **)&in->reports, &in->cap_reports, in->n_reports + 1, sizeof(report_t)) < 0) {
        in->oom = 1;
        pthread_mutex_unlock(&in->lock);
        return;
    }
    report_t *r = &in->reports[in->n_reports++];
    r->token = token;
    r->n = 1;
    r->err = m->err;
    r->value = NULL;
    r->len = 0;
    if (m->err == RK_ERR_MSG_SIZE_TOO_LARGE && m->payload != NULL) {
        r->value = malloc(m->len ? m->len : 1);
        if (r->value != NULL) {
            memcpy(r->value, m->payload, m->len);
            r->len = m->len;
        }
    }
    pthread_mutex_unlock(&in->lock);
}

/* Takes `text` (malloc'ed, NULL: out of memory). */
static void push_event(inbox_t *in, int kind, int code, int fatal, char *text) {
    pthread_mutex_lock(&in->lock);
    if (text == NULL) {
        in->oom = 1;
        pthread_mutex_unlock(&in->lock);
        return;
    }
    if (grow((void **)&in->events, &in->cap_events, in->n_events + 1, sizeof(event_t)) < 0) {
        in->oom = 1;
        pthread_mutex_unlock(&in->lock);
        free(text);
        return;
    }
    event_t *e = &in->events[in->n_events++];
    e->kind = kind;
    e->code = code;
    e->fatal = fatal;
    e->text = text;
    pthread_mutex_unlock(&in->lock);
}

static void on_error(rd_kafka_t *rkh, int err, const char *reason, void *opaque) {
    inbox_t *in = (inbox_t *)opaque;
    if (err == RK_ERR_FATAL) {
        char why[512];
        int code = rk.fatal_error(rkh, why, sizeof(why));
        push_event(in, 0, code ? code : err, 1, strdup(code ? why : reason));
        return;
    }
    push_event(in, 0, err, 0, strdup(reason));
}

static void on_log(const rd_kafka_t *rkh, int level, const char *fac, const char *buf) {
    inbox_t *in = (inbox_t *)rk.opaque(rkh);
    if (in == NULL)
        return;
    const char *name = rk.name(rkh);
    size_t size = strlen(fac) + strlen(name) + strlen(buf) + 5;
    char *text = malloc(size);
    if (text != NULL)
        snprintf(text, size, "%s [%s] %s", fac, name, buf);
    push_event(in, 1, level, 0, text);
}

/* ------------------------------------------------------------------ the Producer type */

typedef struct {
    PyObject_HEAD
    rd_kafka_t *rk;
    inbox_t *inbox;
    PyObject *topics;  /* str -> PyCapsule(rd_kafka_topic_t *) */
    int busy;  /* calls running with the GIL released (changed with the GIL held) */
    int closing;  /* close() was called: no new call starts */
} ProducerObject;

static void free_inbox(inbox_t *in) {
    if (in == NULL)
        return;
    for (size_t i = 0; i < in->n_reports; i++)
        free(in->reports[i].value);
    for (size_t i = 0; i < in->n_events; i++)
        free(in->events[i].text);
    free(in->reports);
    free(in->events);
    pthread_mutex_destroy(&in->lock);
    free(in);
}

static void topic_capsule_free(PyObject *capsule) {
    rd_kafka_topic_t *rkt = PyCapsule_GetPointer(capsule, "rd_kafka_topic_t");
    if (rkt != NULL)
        rk.topic_destroy(rkt);
}

/* Only with no call in progress (busy == 0): dealloc has none, close() waits for them. */
static void close_producer(ProducerObject *self) {
    if (self->rk == NULL)
        return;
    Py_CLEAR(self->topics);  /* the topic handles go before their producer */
    rd_kafka_t *rkh = self->rk;
    self->rk = NULL;
    Py_BEGIN_ALLOW_THREADS
    rk.destroy(rkh);
    Py_END_ALLOW_THREADS
    free_inbox(self->inbox);
    self->inbox = NULL;
}

static void Producer_dealloc(ProducerObject *self) {
    close_producer(self);
    Py_XDECREF(self->topics);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Producer_init(ProducerObject *self, PyObject *args, PyObject *kwds) {
    const char *libpath;
    PyObject *conf;
    static char *kwlist[] = {"librdkafka", "config", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sO!", kwlist, &libpath, &PyDict_Type, &conf))
        return -1;
    if (self->rk != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Producer already initialised");
        return -1;
    }
    if (load_librdkafka(libpath) < 0)
        return -1;
    char errstr[512];
    rd_kafka_conf_t *c = rk.conf_new();
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(conf, &pos, &k, &v)) {
        const char *ks = PyUnicode_AsUTF8(k);
        const char *vs = ks ? PyUnicode_AsUTF8(v) : NULL;
        if (vs == NULL) {
            rk.conf_destroy(c);
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_TypeError, "config keys and values must be str");
            }
            return -1;
        }
        if (rk.conf_set(c, ks, vs, errstr, sizeof(errstr)) != RK_CONF_OK) {
            rk.conf_destroy(c);
            PyErr_SetString(PyExc_ValueError, errstr);
            return -1;
        }
    }
    /* Log lines are served by poll() like everything else (never from librdkafka's threads). */
    if (rk.conf_set(c, "log.queue", "true", errstr, sizeof(errstr)) != RK_CONF_OK) {
        rk.conf_destroy(c);
        PyErr_SetString(PyExc_ValueError, errstr);
        return -1;
    }
    inbox_t *in = calloc(1, sizeof(inbox_t));
    if (in == NULL) {
        rk.conf_destroy(c);
        PyErr_NoMemory();
        return -1;
    }
    pthread_mutex_init(&in->lock, NULL);
    rk.conf_set_opaque(c, in);
    rk.conf_set_dr_msg_cb(c, on_delivery);
    rk.conf_set_error_cb(c, on_error);
    rk.conf_set_log_cb(c, on_log);
    rd_kafka_t *rkh = rk.new_(RK_PRODUCER, c, errstr, sizeof(errstr));  /* owns c when it succeeds */
    if (rkh == NULL) {
        rk.conf_destroy(c);
        free_inbox(in);
        PyErr_SetString(PyExc_ValueError, errstr);
        return -1;
    }
    rk.set_log_queue(rkh, NULL);  /* NULL: the main queue, which poll() serves */
    self->topics = PyDict_New();
    if (self->topics == NULL) {
        rk.destroy(rkh);
        free_inbox(in);
        return -1;
    }
    self->rk = rkh;
    self->inbox = in;
    return 0;
}

static int check_open(ProducerObject *self) {
    if (self->rk == NULL || self->closing) {
        PyErr_SetString(PyExc_RuntimeError, "the producer is closed");
        return -1;
    }
    return 0;
}

static rd_kafka_topic_t *topic_for(ProducerObject *self, PyObject *name) {
    PyObject *capsule = PyDict_GetItemWithError(self->topics, name);
    if (capsule != NULL)
        return PyCapsule_GetPointer(capsule, "rd_kafka_topic_t");
    if (PyErr_Occurred())
        return NULL;
    const char *s = PyUnicode_AsUTF8(name);
    if (s == NULL)
        return NULL;
    rd_kafka_topic_t *rkt = rk.topic_new(self->rk, s, NULL);
    if (rkt == NULL) {
        PyErr_Format(PyExc_ValueError, "topic %s: error %d", s, rk.last_error());
        return NULL;
    }
    capsule = PyCapsule_New(rkt, "rd_kafka_topic_t", topic_capsule_free);
    if (capsule == NULL) {
        rk.topic_destroy(rkt);
        return NULL;
    }
    int rc = PyDict_SetItem(self->topics, name, capsule);
    Py_DECREF(capsule);
    return rc < 0 ? NULL : rkt;
}

PyDoc_STRVAR(produce_doc,
"produce(topic, key, values, start, token) -> (reached, error)\n\n"
"Hand values[start:] (bytes) to librdkafka, all with `key` (bytes or None) and the delivery\n"
"token `token` (an int). Returns the index reached and 0 when all were taken; the index of the\n"
"first one not taken and -184 (_QUEUE_FULL) when librdkafka's queue is full; or the index and\n"
"librdkafka's error code of a message it refused.");

static PyObject *Producer_produce(ProducerObject *self, PyObject *args) {
    PyObject *topic, *key, *values;
    Py_ssize_t start;
    long long token;
    if (!PyArg_ParseTuple(args, "UOO!nL", &topic, &key, &PyList_Type, &values, &start, &token))
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    const char *kb = NULL;
    Py_ssize_t kl = 0;
    if (key != Py_None && PyBytes_AsStringAndSize(key, (char **)&kb, &kl) < 0)
        return NULL;
    rd_kafka_topic_t *rkt = topic_for(self, topic);
    if (rkt == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(values), i;
    if (start < 0)
        start = 0;
    for (i = start; i < n; i++) {
        if (!PyBytes_Check(PyList_GET_ITEM(values, i))) {
            PyErr_Format(PyExc_TypeError, "values[%zd] is not bytes", i);
            return NULL;
        }
    }
    int err = 0;
    void *opaque = (void *)(intptr_t)token;
    if (n - start < RELEASE_FROM) {  /* a few messages: not worth handing the GIL over and back */
        for (i = start; i < n; i++) {
            PyObject *v = PyList_GET_ITEM(values, i);
            if (rk.produce(rkt, RK_PARTITION_UA, RK_MSG_F_COPY, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v),
                           kb, (size_t)kl, opaque) != 0) {
                err = rk.last_error();
                break;
            }
        }
        return Py_BuildValue("(ni)", i, err);
    }
    /* Many: their addresses first, then librdkafka copies them with the GIL released (the poll
     * thread's reports and the loop's next read go on meanwhile). The list and its bytes stay
     * alive and unchanged: the caller holds them, and bytes do not change. */
    Py_ssize_t count = n - start;
    struct { const char *p; size_t len; } *items = PyMem_Malloc((size_t)count * sizeof(*items));
    if (items == NULL)
        return PyErr_NoMemory();
    for (i = 0; i < count; i++) {
        PyObject *v = PyList_GET_ITEM(values, start + i);
        items[i].p = PyBytes_AS_STRING(v);
        items[i].len = (size_t)PyBytes_GET_SIZE(v);
    }
    Py_ssize_t done = 0;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    for (; done < count; done++) {
        if (rk.produce(rkt, RK_PARTITION_UA, RK_MSG_F_COPY, (void *)items[done].p, items[done].len,
                       kb, (size_t)kl, opaque) != 0) {
            err = rk.last_error();
            break;
        }
    }
    Py_END_ALLOW_THREADS
    self->busy--;
    PyMem_Free(items);
    return Py_BuildValue("(ni)", start + done, err);
}

PyDoc_STRVAR(poll_doc,
"poll(timeout) -> (reports, events)\n\n"
"Serve librdkafka's callbacks for up to `timeout` seconds (the GIL released), then return what\n"
"they collected: reports, a list of (token, n, error, value) in the order librdkafka gave them\n"
"(consecutive successes of one token folded; `value` only for a message refused for its size);\n"
"events, a list of (kind, code, fatal, text): kind 0 an error (code: librdkafka's error), kind 1 a\n"
"log line (code: its syslog level, text 'facility: message').");

static PyObject *take_inbox(inbox_t *in) {
    pthread_mutex_lock(&in->lock);
    report_t *reports = in->reports;
    size_t n_reports = in->n_reports;
    event_t *events = in->events;
    size_t n_events = in->n_events;
    int oom = in->oom;
    in->reports = NULL;
    in->n_reports = in->cap_reports = 0;
    in->events = NULL;
    in->n_events = in->cap_events = 0;
    in->oom = 0;
    pthread_mutex_unlock(&in->lock);

    PyObject *out_reports = PyList_New((Py_ssize_t)n_reports);
    PyObject *out_events = PyList_New((Py_ssize_t)n_events);
    int failed = out_reports == NULL || out_events == NULL;
    for (size_t i = 0; i < n_reports; i++) {
        report_t *r = &reports[i];
        if (!failed) {
            PyObject *value;
            if (r->value != NULL)
                value = PyBytes_FromStringAndSize(r->value, (Py_ssize_t)r->len);
            else
                value = Py_NewRef(Py_None);
            PyObject *t = value ? Py_BuildValue("(LniN)", (long long)r->token, r->n, r->err, value) : NULL;
            if (t == NULL)
                failed = 1;
            else
                PyList_SET_ITEM(out_reports, (Py_ssize_t)i, t);
        }
        free(r->value);
    }
    for (size_t i = 0; i < n_events; i++) {
        event_t *e = &events[i];
        if (!failed) {
            PyObject *t = Py_BuildValue("(iiiN)", e->kind, e->code, e->fatal,
                                        PyUnicode_DecodeUTF8(e->text, (Py_ssize_t)strlen(e->text), "replace"));
            if (t == NULL)
                failed = 1;
            else
                PyList_SET_ITEM(out_events, (Py_ssize_t)i, t);
        }
        free(e->text);
    }
    free(reports);
    free(events);
    if (!failed && oom) {
        PyErr_SetString(PyExc_MemoryError, "a librdkafka callback could not record its report");
        failed = 1;
    }
    if (failed) {
        Py_XDECREF(out_reports);
        Py_XDECREF(out_events);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return NULL;
    }
    return Py_BuildValue("(NN)", out_reports, out_events);
}

/* Seconds as librdkafka's milliseconds: 0 at most, INT_MAX (24 days) at least. */
static int to_ms(double timeout) {
    if (timeout <= 0)
        return 0;
    return timeout * 1000.0 >= (double)INT_MAX ? INT_MAX : (int)(timeout * 1000.0);
}

/* poll() and flush(): their one argument, a timeout in seconds, in milliseconds (-1: an error). */
static int timeout_arg(ProducerObject *self, PyObject *args) {
    double timeout;
    if (!PyArg_ParseTuple(args, "d", &timeout) || check_open(self) < 0)
        return -1;
    return to_ms(timeout);
}

static PyObject *Producer_poll(ProducerObject *self, PyObject *args) {
    int ms = timeout_arg(self, args);
    if (ms < 0)
        return NULL;
    rd_kafka_t *rkh = self->rk;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    rk.poll(rkh, ms);
    Py_END_ALLOW_THREADS
    self->busy--;
    return take_inbox(self->inbox);
}

PyDoc_STRVAR(flush_doc,
"flush(timeout) -> int\n\nWait up to `timeout` seconds for every message's report (collected for\n"
"the next poll()); returns how many messages are still without one.");

static PyObject *Producer_flush(ProducerObject *self, PyObject *args) {
    int ms = timeout_arg(self, args);
    if (ms < 0)
        return NULL;
    rd_kafka_t *rkh = self->rk;
    int left;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    rk.flush(rkh, ms);
    left = rk.outq_len(rkh);
    Py_END_ALLOW_THREADS
    self->busy--;
    return PyLong_FromLong(left);
}

PyDoc_STRVAR(metadata_doc,
"metadata(topic, timeout) -> (error, brokers, topic_error, partitions)\n\n"
"Ask the cluster (blocking, the GIL released): librdkafka's error for the request (0: answered),\n"
"the number of brokers, and for `topic` (a str, or None for none) its error and partition count.");

static PyObject *Producer_metadata(ProducerObject *self, PyObject *args) {
    PyObject *topic;
    double timeout;
    if (!PyArg_ParseTuple(args, "Od", &topic, &timeout))
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    rd_kafka_topic_t *rkt = NULL;
    if (topic != Py_None) {
        if (!PyUnicode_Check(topic)) {
            PyErr_SetString(PyExc_TypeError, "topic must be a str or None");
            return NULL;
        }
        if ((rkt = topic_for(self, topic)) == NULL)
            return NULL;
    }
    const rk_metadata_t *md = NULL;
    rd_kafka_t *rkh = self->rk;
    int ms = to_ms(timeout);
    int err;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    err = rk.metadata(rkh, 0, rkt, &md, ms);
    Py_END_ALLOW_THREADS
    self->busy--;
    if (err != 0 || md == NULL)
        return Py_BuildValue("(iiii)", err ? err : -1, 0, 0, 0);
    int topic_err = 0, partitions = 0;
    if (rkt != NULL && md->topic_cnt > 0) {
        topic_err = md->topics[0].err;
        partitions = md->topics[0].partition_cnt;
    }
    PyObject *out = Py_BuildValue("(iiii)", 0, md->broker_cnt, topic_err, partitions);
    rk.metadata_destroy(md);
    return out;
}

static PyObject *Producer_outq_len(ProducerObject *self, PyObject *Py_UNUSED(ignored)) {
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromLong(rk.outq_len(self->rk));
}

static PyObject *Producer_close(ProducerObject *self, PyObject *Py_UNUSED(ignored)) {
    self->closing = 1;
    while (self->busy > 0) {  /* another thread in poll(), flush() or metadata(): let it return first */
        Py_BEGIN_ALLOW_THREADS
        usleep(5000);
        Py_END_ALLOW_THREADS
    }
    close_producer(self);
    Py_RETURN_NONE;
}

static PyMethodDef Producer_methods[] = {
    {"produce", (PyCFunction)Producer_produce, METH_VARARGS, produce_doc},
    {"poll", (PyCFunction)Producer_poll, METH_VARARGS, poll_doc},
    {"flush", (PyCFunction)Producer_flush, METH_VARARGS, flush_doc},
    {"metadata", (PyCFunction)Producer_metadata, METH_VARARGS, metadata_doc},
    {"outq_len", (PyCFunction)Producer_outq_len, METH_NOARGS, "Messages librdkafka holds, not yet reported."},
    {"close", (PyCFunction)Producer_close, METH_NOARGS,
     "Destroy the librdkafka producer (what it holds is dropped), once the calls of other threads returned."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ProducerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "logagent.sinks.kafka._batchproduce.Producer",
    .tp_basicsize = sizeof(ProducerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Producer(librdkafka, config): a librdkafka producer driven a batch at a time.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Producer_init,
    .tp_dealloc = (destructor)Producer_dealloc,
    .tp_methods = Producer_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_batchproduce",
    "A librdkafka producer driven a batch at a time (see logagent/sinks/kafka/batched.py).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__batchproduce(void) {
    if (PyType_Ready(&ProducerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Producer", (PyObject *)&ProducerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
