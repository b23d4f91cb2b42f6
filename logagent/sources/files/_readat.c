/* A file's new bytes and a check of its head in one call: the tailer's read of a write inotify told
 * of (sources/files/tailer.py, FileTailer._read_new).
 *
 * Every read of a file whose fingerprint is complete looks at the file's first bytes again, after the
 * read: a file truncated and at once written past the old offset is told apart only there. In Python
 * that was two os.pread calls, a 1 KiB bytes object, a CRC and two method calls per line; at 10,000
 * files x 1 line/s it was about a tenth of what a line cost (issue 23). Here it is one call: the new
 * bytes, and a 64-bit hash of the head that the caller compares with the one it took when the head last
 * matched the fingerprint. Anything unusual (a short head, nothing new) is left to the Python path.
 *
 *   read_new(fd, pos, size, head_len) -> (data, head_hash)
 *       data: up to `size` bytes at `pos` (OSError as os.pread raises it); head_hash: the hash of the
 *       file's first `head_len` bytes, read after `data`; -1 when data is empty, head_len is 0, or
 *       fewer than head_len bytes could be read.
 *   head_hash(data) -> int
 *       the same hash of a bytes object (for the Python path, so that both compare alike).
 *
 * The hash is a word-at-a-time multiply-xorshift (MurmurHash64A's structure), not a cryptographic one:
 * it tells a changed head from the same head, as the CRC-32 it replaces did.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define HEAD_MAX (64 * 1024)  /* the largest head read_new reads */
#define HEAD_ON_STACK 4096    /* ... and the largest it reads without an allocation */
#define READ_ON_STACK 4096    /* the largest read of new bytes into the stack first */

static uint64_t
hash_bytes(const unsigned char *p, size_t n)
{
    const uint64_t m = 0xc6a4a7935bd1e995ULL;
    uint64_t h = 0x8445d61a4e774912ULL ^ ((uint64_t)n * m);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t k;
        memcpy(&k, p + i, 8);
        k *= m;
        k ^= k >> 47;
        k *= m;
        h ^= k;
        h *= m;
    }
    if (i < n) {
        uint64_t k = 0;
        memcpy(&k, p + i, n - i);
        h ^= k;
        h *= m;
    }
    h ^= h >> 47;
    h *= m;
    h ^= h >> 47;
    return h;
}

/* The arguments of read_new as integers: fd, pos, size, head_len (no tuple parsing: at 10,000 files a
 * call per line, and PyArg_ParseTuple's formats cost more than the read's own work). */
static int
int_args(PyObject *const *args, Py_ssize_t nargs, long long *out)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "read_new takes 4 arguments (%zd given)", nargs);
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        out[i] = PyLong_AsLongLong(args[i]);
        if (out[i] == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static PyObject *
read_new(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long a[4];
    if (int_args(args, nargs, a) < 0)
        return NULL;
    long long pos = a[1], size = a[2], head_len = a[3];
    if (a[0] < 0 || a[0] > INT_MAX || pos < 0 || size < 0 || size > PY_SSIZE_T_MAX || head_len < 0
            || head_len > HEAD_MAX) {
        PyErr_SetString(PyExc_ValueError, "read_new: a negative or too large descriptor, offset or size, or head_len "
                        "above 64 KiB");
        return NULL;
    }
    int fd = (int)a[0];
    /* A write notified is mostly a line or a few: read into the stack, and make the bytes object of the
     * size read. A larger read goes straight into an object of `size`, cut to what was read. */
    unsigned char small[READ_ON_STACK];
    PyObject *data = NULL;
    unsigned char *dst = small;
    if (size > (long long)sizeof(small)) {
        data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
        if (data == NULL)
            return NULL;
        dst = (unsigned char *)PyBytes_AS_STRING(data);
    }
    unsigned char head[HEAD_ON_STACK];
    unsigned char *hbuf = head;
    if (head_len > (long long)sizeof(head)) {
        hbuf = PyMem_Malloc((size_t)head_len);
        if (hbuf == NULL) {
            Py_XDECREF(data);
            return PyErr_NoMemory();
        }
    }
    ssize_t n, got = -1;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    do {
        n = pread(fd, dst, (size_t)size, (off_t)pos);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        err = errno;
    } else if (n > 0 && head_len > 0) {
        do {
            got = pread(fd, hbuf, (size_t)head_len, 0);
        } while (got < 0 && errno == EINTR);
    }
    Py_END_ALLOW_THREADS
    long long hash = -1;
    if (got == head_len && head_len > 0)
        hash = (long long)(hash_bytes(hbuf, (size_t)head_len) >> 1);  /* non-negative: -1 stays free */
    if (hbuf != head)
        PyMem_Free(hbuf);
    if (n < 0) {
        Py_XDECREF(data);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (data == NULL)
        data = PyBytes_FromStringAndSize((const char *)small, n);
    else if (n < size && _PyBytes_Resize(&data, n) < 0)
        return NULL;
    if (data == NULL)
        return NULL;
    return Py_BuildValue("(NL)", data, hash);  /* (N: the tuple takes `data` over) */
}

static PyObject *
head_hash(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    long long hash = (long long)(hash_bytes(view.buf, (size_t)view.len) >> 1);
    PyBuffer_Release(&view);
    return PyLong_FromLongLong(hash);
}

static PyMethodDef methods[] = {
    {"read_new", (PyCFunction)(void (*)(void))read_new, METH_FASTCALL,
     "read_new(fd, pos, size, head_len) -> (data, head_hash): the bytes at pos, then the head's hash"},
    {"head_hash", head_hash, METH_O, "head_hash(data) -> int: the hash read_new gives of a head"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_readat", "A file's new bytes and its head's hash in one call.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__readat(void)
{
    return PyModule_Create(&module);
}
