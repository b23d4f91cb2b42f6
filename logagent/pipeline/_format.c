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
 * json_plain() is that check: one pass of a table over the bytes read.
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
    Py_ssize_t n = PyList_GET_SIZE(lines);
    Py_ssize_t fixed = before.len + after.len + ts.len + end.len + (ids ? id_before.len + 1 : 0);
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    char buf[24];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (!PyBytes_Check(line)) {
            PyErr_Format(PyExc_TypeError, "lines[%zd] is not bytes", i);
            Py_CLEAR(out);
            goto done;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(line);
        char *num = digits(buf + sizeof(buf), off);
        Py_ssize_t numlen = buf + sizeof(buf) - num;
        PyObject *msg = PyBytes_FromStringAndSize(NULL, fixed + len + numlen * (ids ? 2 : 1));
        if (msg == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        char *p = PyBytes_AS_STRING(msg);
        PUT(p, before.buf, before.len);
        PUT(p, PyBytes_AS_STRING(line), len);
        PUT(p, after.buf, after.len);
        PUT(p, num, numlen);
        if (ids) {
            PUT(p, id_before.buf, id_before.len);
            PUT(p, num, numlen);
            *p++ = '"';
        }
        PUT(p, ts.buf, ts.len);
        PUT(p, end.buf, end.len);
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

static PyMethodDef methods[] = {
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
