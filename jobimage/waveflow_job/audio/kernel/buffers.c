/* Reading Python buffers: which of the three sample types they hold, one channel of them, and
 * the writable outputs the functions fill. */
#include "kernel.h"

int wf_sample_kind(const Py_buffer *view, enum kind *out) {
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') {
        f++;
    }
    if (f[0] != '\0' && f[1] == '\0') {
        if (*f == 'h' && view->itemsize == 2) { *out = KIND_INT16; return 0; }
        if ((*f == 'i' || *f == 'l') && view->itemsize == 4) { *out = KIND_INT32; return 0; }
        if (*f == 'f' && view->itemsize == 4) { *out = KIND_FLOAT32; return 0; }
    }
    PyErr_Format(PyExc_TypeError, "samples must be int16, int32 or float32, not '%s'",
                 view->format ? view->format : "B");
    return -1;
}

int wf_get_channel(PyObject *obj, Py_buffer *view, enum kind *out) {
    if (PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO) < 0) {
        return -1;
    }
    if (wf_sample_kind(view, out) < 0 || view->ndim != 1) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "samples must be one channel (1-D)");
        }
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

int wf_get_out(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t count,
               const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return -1;
    }
    if (view->itemsize != itemsize || view->len < count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: need %zd items of %zd bytes", name, count, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

int wf_get_starts(PyObject *obj, Py_buffer *view, Py_ssize_t n) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return -1;
    }
    Py_ssize_t nseg = view->len / 8;
    const int64_t *starts = view->buf;
    int bad = view->itemsize != 8 || nseg < 1 || n < 1 || starts[0] != 0;
    for (Py_ssize_t j = 1; !bad && j < nseg; j++) {
        bad = starts[j] <= starts[j - 1] || starts[j] >= n;
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError,
                        "starts must be int64, begin at 0 and rise strictly inside the samples");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}
