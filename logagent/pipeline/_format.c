/*
 * logagent.pipeline._format: the messages of plain lines, built in C (issue 23).
 *
 * MessageFormat.build_plain (message.py) makes one JSON message per line with one `%` formatting
 * each; at a million lines a second that formatting was the largest single cost left in the agent.
 * build_plain() here makes the very same bytes (tests/unit/pipeline/test_message.py compares the
 * two) from the parts MessageFormat pre-encodes: for each line, from offset `start` on,
 *
 *     before + line + after + offset [+ id_before + offset + '"'] + ts + end
 *
 * where the offset advances by len(line) + 1 from line to line. Only for lines json_plain() passed:
 * nothing in them needs escaping.
 *
 * json_plain() is that check: one pass of a table over the bytes read. split_build() does the three
 * in one call for a chunk of a UTF-8 file (LineSplitter.feed_built): it splits the held partial line
 * and the new bytes at each newline, checks every byte and every line's length, and builds the
 * messages; or, when anything needs care, builds nothing and says so (None).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Decimal digits of v (v >= 0) written backwards from the end of buf[24]; returns where they start. */
static char *digits(char *end, long long v) {
    char *p = end;
    unsigned long long u = v < 0 ? 0 : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    return p;
}

#define PUT(ptr, src, len) (memcpy((ptr), (src), (size_t)(len)), (ptr) += (len))

PyDoc_STRVAR(build_plain_doc,
"build_plain(before, after, id_before, end, start, lines, ts) -> list[bytes]\n\n"
"One message per line of `lines` (bytes): before + line + after + offset [+ id_before + offset + '\"']\n"
"+ ts + end, the offset starting at `start` and moving by len(line) + 1. `id_before` None: no id.");

/* The constant parts of a message (MessageFormat._parts) and the timestamp's, as pointers and lengths. */
typedef struct {
    const char *before, *after, *id_before, *ts, *end;
    Py_ssize_t before_len, after_len, id_before_len, ts_len, end_len;
    int ids;
} parts_t;

/* One message: before + a + b + after + offset [+ id_before + offset + '"'] + ts + end (the line is
 * a then b: a line of split_build begins with the bytes held before the new ones). */
static PyObject *one_message(const parts_t *m, const char *a, Py_ssize_t alen, const char *b, Py_ssize_t blen,
                             long long off) {
    char buf[24];
    char *num = digits(buf + sizeof(buf), off);
    Py_ssize_t numlen = buf + sizeof(buf) - num;
    Py_ssize_t size = m->before_len + alen + blen + m->after_len + numlen + m->ts_len + m->end_len
                      + (m->ids ? m->id_before_len + numlen + 1 : 0);
    PyObject *msg = PyBytes_FromStringAndSize(NULL, size);
    if (msg == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(msg);
    PUT(p, m->before, m->before_len);
    PUT(p, a, alen);
    PUT(p, b, blen);
    PUT(p, m->after, m->after_len);
    PUT(p, num, numlen);
    if (m->ids) {
        PUT(p, m->id_before, m->id_before_len);
        PUT(p, num, numlen);
        *p++ = '"';
    }
    PUT(p, m->ts, m->ts_len);
    PUT(p, m->end, m->end_len);
    return msg;
}

static PyObject *build_plain(PyObject *self, PyObject *args) {
    Py_buffer before, after, end, ts, id_before = {0};
    PyObject *id_obj, *lines;
    long long off;
    if (!PyArg_ParseTuple(args, "y*y*Oy*LO!y*", &before, &after, &id_obj, &end, &off, &PyList_Type, &lines, &ts))
        return NULL;
    PyObject *out = NULL;
    int ids = id_obj != Py_None;
    if (ids && PyObject_GetBuffer(id_obj, &id_before, PyBUF_SIMPLE) < 0)
        goto done;
    parts_t m = {before.buf, after.buf, ids ? id_before.buf : NULL, ts.buf, end.buf,
                 before.len, after.len, ids ? id_before.len : 0, ts.len, end.len, ids};
    Py_ssize_t n = PyList_GET_SIZE(lines);
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (!PyBytes_Check(line)) {
            PyErr_Format(PyExc_TypeError, "lines[%zd] is not bytes", i);
            Py_CLEAR(out);
            goto done;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(line);
        PyObject *msg = one_message(&m, PyBytes_AS_STRING(line), len, NULL, 0, off);
        if (msg == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, msg);
        off += len + 1;
    }
done:
    PyBuffer_Release(&before);
    PyBuffer_Release(&after);
    PyBuffer_Release(&end);
    PyBuffer_Release(&ts);
    if (ids && id_before.obj != NULL)
        PyBuffer_Release(&id_before);
    return out;
}

/* The bytes a JSON string holds as they are: printable ASCII but '"' and '\\', and the newline (never
 * inside a line: it separates them). message.py's _JSON_SAFE, as a table. */
static unsigned char json_safe[256];

static void init_json_safe(void) {
    for (int b = 0x20; b < 0x7F; b++)
        json_safe[b] = b != '"' && b != '\\';
    json_safe['\n'] = 1;
}

PyDoc_STRVAR(json_plain_doc,
"json_plain(data) -> bool\n\n"
"True when every byte of `data` is one a JSON string holds as it is (message.json_plain, one pass of a\n"
"table: the bytes.translate it replaces took ~20 instructions a byte).");

static PyObject *json_plain(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = view.buf, *stop = p + view.len;
    unsigned char all = 1;
    while (p < stop)
        all &= json_safe[*p++];
    PyBuffer_Release(&view);
    return PyBool_FromLong(all);
}

PyDoc_STRVAR(split_build_doc,
"split_build(before, after, id_before, end, start, held, data, max_line, ts) -> (messages, rest) | None\n\n"
"The lines of held + data (the first from offset `start`) split at each newline, checked and built in one\n"
"pass: the messages of the complete lines, as build_plain makes them, and the bytes after the last\n"
"newline. None, nothing built, when a byte is not one json_plain passes (a CR, a quote, a control or\n"
"non-ASCII byte: the Python path decides), or a line or the rest is longer than max_line.");

static PyObject *split_build(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_Format(PyExc_TypeError, "split_build takes 9 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *before = args[0], *after = args[1], *id_obj = args[2], *end = args[3], *held = args[5],
             *data = args[6], *ts = args[8];
    int ids = id_obj != Py_None;
    if (!PyBytes_Check(before) || !PyBytes_Check(after) || (ids && !PyBytes_Check(id_obj)) || !PyBytes_Check(end)
            || !PyBytes_Check(held) || !PyBytes_Check(data) || !PyBytes_Check(ts)) {
        PyErr_SetString(PyExc_TypeError, "split_build: the parts, held, data and ts must be bytes (id_before: or None)");
        return NULL;
    }
    long long off = PyLong_AsLongLong(args[4]);
    if (off == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t max_line = PyLong_AsSsize_t(args[7]);
    if (max_line == -1 && PyErr_Occurred())
        return NULL;
    const unsigned char *h = (const unsigned char *)PyBytes_AS_STRING(held);
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t hlen = PyBytes_GET_SIZE(held), dlen = PyBytes_GET_SIZE(data);
    /* Pass 1: every byte safe, every line within max_line; count the lines. The bytes are checked without
     * a branch each, the result at each line's end: a chunk is declined at the end of its first line with
     * a byte to escape (a CRLF file's chunk at its first line, not at its end). */
    unsigned char all = 1;
    for (Py_ssize_t i = 0; i < hlen; i++)
        all &= json_safe[h[i]] & (h[i] != '\n');  /* (held never has one: a caller's mistake is refused) */
    Py_ssize_t lines = 0, line_start = -hlen, longest = 0;  /* line_start: in data, held before 0 */
    for (Py_ssize_t i = 0; i < dlen; i++) {
        unsigned char c = d[i];
        all &= json_safe[c];
        if (c == '\n') {
            if (!all)
                Py_RETURN_NONE;
            if (i - line_start > longest)
                longest = i - line_start;
            line_start = i + 1;
            lines++;
        }
    }
    if (!all || longest > max_line || dlen - line_start > max_line)
        Py_RETURN_NONE;
    parts_t m = {PyBytes_AS_STRING(before), PyBytes_AS_STRING(after), ids ? PyBytes_AS_STRING(id_obj) : NULL,
                 PyBytes_AS_STRING(ts), PyBytes_AS_STRING(end), PyBytes_GET_SIZE(before), PyBytes_GET_SIZE(after),
                 ids ? PyBytes_GET_SIZE(id_obj) : 0, PyBytes_GET_SIZE(ts), PyBytes_GET_SIZE(end), ids};
    /* Pass 2: the messages, and the rest. */
    PyObject *out = PyList_New(lines), *rest = NULL;
    if (out == NULL)
        return NULL;
    Py_ssize_t pos = 0, n = 0;
    for (Py_ssize_t i = 0; i < dlen && n < lines; i++) {
        if (d[i] != '\n')
            continue;
        PyObject *msg = n == 0 ? one_message(&m, (const char *)h, hlen, (const char *)d, i, off)
                               : one_message(&m, (const char *)d + pos, i - pos, NULL, 0, off);
        if (msg == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, n++, msg);
        off += (n == 1 ? hlen + i : i - pos) + 1;
        pos = i + 1;
    }
    if (lines == 0) {  /* no newline: all of it is held */
        rest = PyBytes_FromStringAndSize(NULL, hlen + dlen);
        if (rest != NULL) {
            memcpy(PyBytes_AS_STRING(rest), h, (size_t)hlen);
            memcpy(PyBytes_AS_STRING(rest) + hlen, d, (size_t)dlen);
        }
    } else {
        rest = PyBytes_FromStringAndSize((const char *)d + pos, dlen - pos);
    }
    if (rest == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, out, rest);  /* (NULL when it fails: both go either way) */
    Py_DECREF(out);
    Py_DECREF(rest);
    return result;
}

static PyMethodDef methods[] = {
    {"split_build", (PyCFunction)(void (*)(void))split_build, METH_FASTCALL, split_build_doc},
    {"build_plain", build_plain, METH_VARARGS, build_plain_doc},
    {"json_plain", json_plain, METH_O, json_plain_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_format", "The messages of plain lines, built in C (see message.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__format(void) {
    init_json_safe();
    return PyModule_Create(&module);
}
