/* The reference for benchmarks/bench_calls.py: the best a binding can do.
 * Hand-written CPython C-API functions (METH_O, METH_FASTCALL) making the
 * same system calls as wfpredirect's netfilter backend and building the
 * same results: the (host, port) tuple, a RedirectRecords holding the same
 * 18-byte record, the byte count written into the caller's buffer.
 *
 * Only the path the benchmark times is complete: a redirected IPv4
 * connection (no TPROXY, no IPv6); anything else raises a plain OSError.
 * Built by bench_calls.py with the system compiler. Linux only. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#define BENCH_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h */
#define RECORD_V4_SIZE 18        /* csrc/core/netfilter/record.hpp */

static PyObject* redirect_records_type; /* wfpredirect.RedirectRecords */
static unsigned int loop_mark = 0x40;   /* set by configure() */
static unsigned int mark_mask = 0xF0;

static PyObject* os_error(int error) {
    errno = error;
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* getsockname, getsockopt(SO_ORIGINAL_DST), compared with the local address. */
static int read_original_destination(int fd, struct sockaddr_in* original) {
    struct sockaddr_storage local_storage;
    socklen_t size = sizeof local_storage;
    if (getsockname(fd, (struct sockaddr*)&local_storage, &size) != 0)
        return os_error(errno), 0;
    if (local_storage.ss_family != AF_INET)
        return os_error(EAFNOSUPPORT), 0;
    const struct sockaddr_in* local = (const struct sockaddr_in*)&local_storage;
    size = sizeof *original;
    if (getsockopt(fd, SOL_IP, BENCH_SO_ORIGINAL_DST, original, &size) != 0)
        return os_error(errno), 0;
    if (original->sin_port == local->sin_port &&
        original->sin_addr.s_addr == local->sin_addr.s_addr)
        return os_error(ENOENT), 0;
    return 1;
}

static void put_u32(unsigned char* out, unsigned int value) {
    out[0] = (unsigned char)(value >> 24);
    out[1] = (unsigned char)(value >> 16);
    out[2] = (unsigned char)(value >> 8);
    out[3] = (unsigned char)value;
}

/* The netfilter record of the connection (csrc/core/netfilter/record.hpp). */
static int build_record(int fd, unsigned char record[RECORD_V4_SIZE]) {
    struct sockaddr_in original;
    if (!read_original_destination(fd, &original))
        return 0;
    unsigned int mark;
    socklen_t size = sizeof mark;
    if (getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &size) != 0)
        return os_error(errno), 0;
    memcpy(record, "WFPR\x01\x04\x00\x00", 8);
    put_u32(record + 8, mark & mark_mask);
    memcpy(record + 12, &original.sin_port, 2);
    memcpy(record + 14, &original.sin_addr, 4);
    return 1;
}

static PyObject* original_destination(PyObject* module, PyObject* sock) {
    (void)module;
    const int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0)
        return NULL;
    struct sockaddr_in original;
    if (!read_original_destination(fd, &original))
        return NULL;
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &original.sin_addr, host, sizeof host);
    PyObject* result = PyTuple_New(2);
    if (result == NULL)
        return NULL;
    PyObject* text = PyUnicode_FromString(host);
    PyObject* port = PyLong_FromLong(ntohs(original.sin_port));
    if (text == NULL || port == NULL) {
        Py_XDECREF(text);
        Py_XDECREF(port);
        Py_DECREF(result);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, text);
    PyTuple_SET_ITEM(result, 1, port);
    return result;
}

static PyObject* query_redirect_records(PyObject* module, PyObject* sock) {
    (void)module;
    const int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0)
        return NULL;
    unsigned char record[RECORD_V4_SIZE];
    if (!build_record(fd, record))
        return NULL;
    PyObject* raw = PyBytes_FromStringAndSize((const char*)record, RECORD_V4_SIZE);
    if (raw == NULL)
        return NULL;
    PyObject* records = PyObject_CallOneArg(redirect_records_type, raw);
    Py_DECREF(raw);
    return records;
}

static PyObject* query_redirect_records_into(PyObject* module, PyObject* const* args,
                                             Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "query_redirect_records_into takes 2 arguments");
        return NULL;
    }
    const int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0)
        return NULL;
    unsigned char record[RECORD_V4_SIZE];
    int ok = build_record(fd, record);
    if (ok && view.len < RECORD_V4_SIZE) {
        os_error(ENOBUFS);
        ok = 0;
    }
    if (ok)
        memcpy(view.buf, record, RECORD_V4_SIZE);
    PyBuffer_Release(&view);
    return ok ? PyLong_FromSsize_t(RECORD_V4_SIZE) : NULL;
}

static int keyword_mark(PyObject* value, unsigned int* out) {
    if (value == Py_None)
        return 1;
    const unsigned long mark = PyLong_AsUnsignedLong(value);
    if (mark == (unsigned long)-1 && PyErr_Occurred())
        return 0;
    *out = (unsigned int)mark;
    return 1;
}

static PyObject* set_redirect_records(PyObject* module, PyObject* const* args, Py_ssize_t nargs,
                                      PyObject* kwnames) {
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_redirect_records takes 2 positional arguments");
        return NULL;
    }
    unsigned int loop = loop_mark, mask = mark_mask;
    const Py_ssize_t keywords = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < keywords; ++i) {
        PyObject* name = PyTuple_GET_ITEM(kwnames, i);
        unsigned int* target = PyUnicode_CompareWithASCIIString(name, "loop_mark") == 0   ? &loop
                               : PyUnicode_CompareWithASCIIString(name, "mark_mask") == 0 ? &mask
                                                                                          : NULL;
        if (target == NULL) {
            PyErr_Format(PyExc_TypeError, "unexpected keyword argument '%U'", name);
            return NULL;
        }
        if (!keyword_mark(args[nargs + i], target))
            return NULL;
    }
    const int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_C_CONTIGUOUS) != 0)
        return NULL;
    const unsigned char* record = view.buf;
    const int valid = view.len == RECORD_V4_SIZE && memcmp(record, "WFPR\x01\x04", 6) == 0 &&
                      (record[6] & ~1u) == 0 && record[7] == 0;
    const unsigned int inbound = ((unsigned int)record[8] << 24) |
                                 ((unsigned int)record[9] << 16) |
                                 ((unsigned int)record[10] << 8) | record[11];
    PyBuffer_Release(&view);
    if (!valid) {
        PyErr_SetString(PyExc_ValueError, "not an IPv4 netfilter record");
        return NULL;
    }
    const unsigned int mark = (inbound & mask) | loop;
    /* Records go on a new socket: its TCP state (TCP_INFO's first byte). */
    unsigned char state = 0;
    socklen_t size = sizeof state;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &state, &size) != 0)
        return os_error(errno);
    if (state != TCP_CLOSE)
        return os_error(EISCONN);
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0)
        return os_error(errno);
    Py_RETURN_NONE;
}

static PyObject* configure(PyObject* module, PyObject* const* args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "configure(loop_mark, mark_mask)");
        return NULL;
    }
    if (!keyword_mark(args[0], &loop_mark) || !keyword_mark(args[1], &mark_mask))
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"original_destination", original_destination, METH_O, NULL},
    {"query_redirect_records", query_redirect_records, METH_O, NULL},
    {"query_redirect_records_into", (PyCFunction)(void (*)(void))query_redirect_records_into,
     METH_FASTCALL, NULL},
    {"set_redirect_records", (PyCFunction)(void (*)(void))set_redirect_records,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(loop_mark, mark_mask): the marks in effect, as wfpredirect's."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT, "capi_reference", NULL, -1, methods,
};

PyMODINIT_FUNC PyInit_capi_reference(void) {
    PyObject* records_module = PyImport_ImportModule("wfpredirect._records");
    if (records_module == NULL)
        return NULL;
    redirect_records_type = PyObject_GetAttrString(records_module, "RedirectRecords");
    Py_DECREF(records_module);
    if (redirect_records_type == NULL)
        return NULL;
    return PyModule_Create(&definition);
}
