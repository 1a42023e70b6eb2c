#!/usr/bin/env python3
"""Builds a CPU shared library from unmodified Metal (.metal) kernel sources.

Part of the mlx-kernels Metal simulator (docs/metal-simulator.md). Python stdlib only.

    python sim/tools/metalsim_build.py --out build/libkernels_sim.so [--clang clang++-19] \
        [-I dir] [-D NAME=VALUE] a.metal b.metal

Steps: (1) preprocess each .metal with clang in "C++ for OpenCL" mode against the
stand-in headers in sim/include; (2) rewrite the token stream: drop Metal attributes,
turn `threadgroup` variables declared in kernels into per-threadgroup arena storage,
and generate one extern "C" entry trampoline per kernel host name; (3) compile to LLVM
IR, reject recursion, instrument every threadgroup (and generic) memory access with
shadow-memory checks; (4) compile, link with sim/runtime into lib*.so exposing the C API
of sim/include/mlxk_metal_sim.h.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SIM_DIR = os.path.dirname(HERE)
INCLUDE_DIR = os.path.join(SIM_DIR, "include")
RUNTIME_DIR = os.path.join(SIM_DIR, "runtime")
MIN_CLANG = 15


class BuildError(Exception):
    pass


# ----------------------------------------------------------------------------------------
def clang_version(path):
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"clang version (\d+)", out)
    return int(m.group(1)) if m else None


def find_clang():
    """Returns the path of a clang++ >= 15 able to build the simulator, or None."""
    env = os.environ.get("MLXK_SIM_CLANG")
    names = ([env] if env else []) + [f"clang++-{v}" for v in range(25, MIN_CLANG - 1, -1)] + ["clang++"]
    for n in names:
        p = shutil.which(n) if not os.path.isabs(n) else (n if os.access(n, os.X_OK) else None)
        if p:
            v = clang_version(p)
            if v is not None and v >= MIN_CLANG:
                return p
    return None


# spell the address spaces of clang's diagnostics the Metal way
METAL_SPELLING = [("__mlxk_as_device", "device"), ("__mlxk_as_threadgroup", "threadgroup"),
                  ("__mlxk_as_constant", "constant"), ("__mlxk_as_thread ", "thread "), ("__mlxk_as_thread", ""),
                  ("__global const", "device/constant const"), ("__global", "device"), ("__local", "threadgroup"),
                  ("__private ", ""), ("__private", ""), ("__generic", "thread"), ("__constant", "constant"),
                  ("__mlxk_kw_", "")]


def metal_spelling(text):
    for a, b in METAL_SPELLING:
        text = text.replace(a, b)
    return text


def run(cmd, what, metal=False):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        out = r.stderr + r.stdout
        if metal:
            out = metal_spelling(out)
        raise BuildError(f"{what} failed:\n$ {' '.join(cmd)}\n{out}")
    return r


# ----------------------------------------------------------------------------------------
# tokenizer for preprocessed C++
TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r\f\v]+|\n)
  | (?P<dir>(?<![^\n])[ \t]*\#[^\n]*)
  | (?P<str>(?:u8|u|U|L)?"(?:\\.|[^"\\\n])*")
  | (?P<chr>(?:u8|u|U|L)?'(?:\\.|[^'\\\n])*')
  | (?P<id>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<num>\.?[0-9](?:[eEpP][+-]|[0-9A-Za-z_.'])*)
  | (?P<punct>::|->\*?|\.\.\.|<<=|>>=|<=>|<<|>>|<=|>=|==|!=|&&|\|\||\+\+|--|[-+*/%&|^!=]=|[{}()\[\];,:.?~!<>=+\-*/%&|^\#@\\])
    """,
    re.X,
)


class Tok:
    __slots__ = ("kind", "text", "start", "end")

    def __init__(self, kind, text, start, end):
        self.kind, self.text, self.start, self.end = kind, text, start, end

    def __repr__(self):
        return f"Tok({self.kind},{self.text!r})"


def tokenize(src):
    toks = []
    pos = 0
    n = len(src)
    while pos < n:
        m = TOKEN_RE.match(src, pos)
        if not m or m.end() == pos:
            raise BuildError(f"tokenizer: unexpected character {src[pos]!r} at offset {pos}")
        kind = m.lastgroup
        if kind not in ("ws",):
            toks.append(Tok(kind, m.group(), m.start(), m.end()))
        pos = m.end()
    return toks


ROLES = {
    "thread_position_in_grid": "tpig",
    "thread_position_in_threadgroup": "tpitg",
    "threadgroup_position_in_grid": "tgpig",
    "threads_per_threadgroup": "tptg",
    "threadgroups_per_grid": "tgpg",
    "threads_per_grid": "gsize",
    "dispatch_threads_per_threadgroup": "tptg",
    "thread_index_in_threadgroup": "tiitg",
    "thread_index_in_simdgroup": "tiisg",
    "thread_index_in_quadgroup": "tiiqg",
    "simdgroup_index_in_threadgroup": "sgitg",
    "simdgroups_per_threadgroup": "sgptg",
    "dispatch_simdgroups_per_threadgroup": "sgptg",
    "threads_per_simdgroup": "simd_size",
    "thread_execution_width": "simd_size",
    "grid_origin": "zero",
}
ROLE_CODE = {"buffer": 0, "tgmem": 1, "tpig": 2, "tpitg": 3, "tgpig": 4, "tptg": 5, "tgpg": 6, "gsize": 7,
             "tiitg": 8, "tiisg": 9, "sgitg": 10, "sgptg": 11, "simd_size": 12, "zero": 13, "tiiqg": 14}
KEEP_ATTRS = {"maybe_unused", "likely", "unlikely", "fallthrough", "nodiscard", "noreturn", "deprecated",
              "clang", "gnu"}


class Kernel:
    def __init__(self, name, is_template, params, file):
        self.name, self.is_template, self.params, self.file = name, is_template, params, file


def match_close(toks, i, open_t, close_t):
    """i points at open_t; returns index of the matching close_t."""
    depth = 0
    for j in range(i, len(toks)):
        t = toks[j].text
        if t == open_t:
            depth += 1
        elif t == close_t:
            depth -= 1
            if depth == 0:
                return j
    raise BuildError(f"unbalanced {open_t}{close_t}")


def attr_group_end(toks, i):
    """toks[i], toks[i+1] are '[' '['; returns index of the second closing ']'."""
    j = match_close(toks, i, "[", "]")
    return j


def is_attr_start(toks, i):
    return toks[i].text == "[" and i + 1 < len(toks) and toks[i + 1].text == "["


def attr_host_name(inner):
    """host_name("...") inside one attribute group (possibly among other attributes)."""
    for n, x in enumerate(inner):
        if x.text == "host_name" and n + 1 < len(inner) and inner[n + 1].text == "(":
            parts = []
            for y in inner[n + 2:]:
                if y.kind != "str":
                    break
                parts.append(ast.literal_eval(y.text))
            return "".join(parts)
    return None


def split_params(toks, lo, hi):
    """Splits toks[lo:hi] at top-level commas (tracking (), [], {}, <>)."""
    parts, cur, depth, angle = [], [], 0, 0
    for k in range(lo, hi):
        t = toks[k].text
        if t in "([{":
            depth += 1
        elif t in ")]}":
            depth -= 1
        elif depth == 0 and t == "<":
            angle += 1
        elif depth == 0 and t == ">":
            angle = max(0, angle - 1)
        elif depth == 0 and t == ">>":
            angle = max(0, angle - 2)
        if t == "," and depth == 0 and angle == 0:
            parts.append(cur)
            cur = []
        else:
            cur.append(k)
    if cur:
        parts.append(cur)
    return parts


def parse_param(toks, idxs, kname):
    role, rindex = None, 0
    core = []
    k = 0
    while k < len(idxs):
        i = idxs[k]
        if is_attr_start(toks, i):
            j = attr_group_end(toks, i)
            inner = [toks[x].text for x in range(i + 2, j - 1)]
            name = inner[0] if inner else ""
            if name == "buffer":
                role, rindex = "buffer", int(inner[2], 0)
            elif name in ("__mlxk_as_threadgroup", "threadgroup"):
                role, rindex = "tgmem", int(inner[2], 0)
            elif name in ROLES:
                role = ROLES[name]
            elif name in ("stage_in", "texture", "sampler"):
                raise BuildError(f"kernel {kname}: attribute [[{name}]] is not supported by the simulator")
            while k < len(idxs) and idxs[k] <= j:
                k += 1
            continue
        core.append(i)
        k += 1
    if not core:
        return None
    pname = toks[core[-1]].text if toks[core[-1]].kind == "id" else None
    text = " ".join(toks[x].text for x in core)
    if role is None:
        raise BuildError(f"kernel {kname}: parameter '{text}' has no Metal attribute ([[buffer(i)]], ...)")
    is_const = False
    if role == "buffer":
        # const pointee: 'const' appears before the last '*' or '&'
        tt = [toks[x].text for x in core]
        last = max([n for n, t in enumerate(tt) if t in ("*", "&")] or [-1])
        is_const = "const" in tt[:last] if last >= 0 else False
    type_text = " ".join(toks[x].text for x in (core[:-1] if pname else core))
    return {"role": role, "index": rindex, "name": pname, "text": text, "const": is_const, "type": type_text}


class Rewriter:
    def namespaces(self):
        """Enclosing namespaces at this point ("" for an anonymous one)."""
        return [x for x in getattr(self, "scope", []) if x is not None]

    def __init__(self, src, fileno, site_base, file):
        self.src = src
        self.toks = tokenize(src)
        self.edits = []  # (start, end, text)
        self.fileno = fileno
        self.site = site_base
        self.file = file
        self.kernels = {}  # name -> Kernel
        self.instances = []  # (host_name, func_expr, kernel_name)
        self.tg_sites = []

    def edit(self, a, b, text):
        self.edits.append((a, b, text))

    def remove_tokens(self, i, j):
        """Removes toks[i..j] inclusive (keeps newlines for line numbers)."""
        a, b = self.toks[i].start, self.toks[j].end
        nl = self.src.count("\n", a, b)
        self.edit(a, b, "\n" * nl if nl else " ")

    def run(self):
        toks = self.toks
        n = len(toks)
        i = 0
        self.scope = []  # namespace names (None for other braces)
        while i < n:
            t = toks[i]
            if t.kind == "dir":
                i += 1
                continue
            if t.text == "namespace":
                j = i + 1
                names = []
                while j < n and (toks[j].kind == "id" or toks[j].text == "::"):
                    if toks[j].kind == "id" and toks[j].text != "inline":
                        names.append(toks[j].text)
                    j += 1
                if j < n and toks[j].text == "{":
                    self.scope.append("::".join(names) if names else "")
                    i = j + 1
                    continue
            if t.text == "{":
                self.scope.append(None)
            elif t.text == "}" and self.scope:
                self.scope.pop()
            # explicit instantiation with attributes
            if t.text == "template" and i + 1 < n and is_attr_start(toks, i + 1):
                i = self.instantiation(i)
                continue
            if is_attr_start(toks, i):
                j = attr_group_end(toks, i)
                inner = [toks[x].text for x in range(i + 2, j - 1)]
                name = inner[0] if inner else ""
                if name == "kernel" or name == "host_name" or "kernel" in inner:
                    # kernel definition: collect all attribute groups here
                    i = self.kernel_def(i)
                    continue
                if name in KEEP_ATTRS:
                    i = j + 1
                    continue
                self.remove_tokens(i, j)
                i = j + 1
                continue
            if t.kind == "id" and t.text == "kernel" and i + 1 < n and toks[i + 1].text == "void":
                i = self.kernel_def(i)
                continue
            i += 1
        return self.apply()

    def instantiation(self, i):
        toks = self.toks
        k = i + 1
        host = None
        is_kernel = False
        while is_attr_start(toks, k):
            j = attr_group_end(toks, k)
            inner = [toks[x] for x in range(k + 2, j - 1)]
            host = attr_host_name(inner) or host
            if any(x.text == "kernel" for x in inner):
                is_kernel = True
            self.remove_tokens(k, j)
            k = j + 1
        if toks[k].text == "kernel":
            is_kernel = True
            self.remove_tokens(k, k)
            k += 1
        # find end ';'
        e = k
        depth = 0
        while e < len(toks) and not (toks[e].text == ";" and depth == 0):
            if toks[e].text in "([{":
                depth += 1
            elif toks[e].text in ")]}":
                depth -= 1
            e += 1
        if not is_kernel:
            return e + 1
        # forms: decltype(f<..>) f<..> ;   or   void f<..>(params...) ;
        if toks[k].text == "decltype":
            close = match_close(toks, k + 1, "(", ")")
            expr_toks = toks[close + 1:e]
            expr = " ".join(x.text for x in expr_toks)
            head = []
            for x in expr_toks:
                if x.text == "<":
                    break
                head.append(x)
            fname = [x.text for x in head if x.kind == "id"][-1]
        else:
            # return type 'void', then name, template args, '(' params ')'
            m = k + 1
            q = m
            while toks[q + 1].text == "::":
                q += 2
            fname = toks[q].text
            q += 1
            if toks[q].text == "<":
                depth = 0
                while True:
                    if toks[q].text == "<":
                        depth += 1
                    elif toks[q].text == ">":
                        depth -= 1
                    elif toks[q].text == ">>":
                        depth -= 2
                    q += 1
                    if depth <= 0:
                        break
            expr = " ".join(x.text for x in toks[m:q])
            # strip parameter attributes in the declaration
            p_open = q
            if toks[p_open].text == "(":
                p_close = match_close(toks, p_open, "(", ")")
                z = p_open
                while z < p_close:
                    if is_attr_start(toks, z):
                        j = attr_group_end(toks, z)
                        self.remove_tokens(z, j)
                        z = j + 1
                    else:
                        z += 1
        if host is None:
            raise BuildError(f"{self.file}: kernel instantiation of {expr} without [[host_name(...)]]")
        self.instances.append((host, expr, fname, self.namespaces()))
        return e + 1

    def kernel_def(self, i):
        toks = self.toks
        k = i
        host = None
        while True:
            if is_attr_start(toks, k):
                j = attr_group_end(toks, k)
                inner = [toks[x] for x in range(k + 2, j - 1)]
                host = attr_host_name(inner) or host
                self.remove_tokens(k, j)
                k = j + 1
            elif toks[k].text == "kernel":
                self.remove_tokens(k, k)
                k += 1
            else:
                break
        # is it a template? look back for 'template <...>' immediately before
        is_template = False
        b = i - 1
        while b >= 0 and toks[b].kind == "dir":
            b -= 1
        if b >= 0 and toks[b].text in (">", ">>"):
            # walk back to 'template'
            depth = 0
            c = b
            while c >= 0:
                if toks[c].text == ">":
                    depth += 1
                elif toks[c].text == ">>":
                    depth += 2
                elif toks[c].text == "<":
                    depth -= 1
                if depth == 0:
                    break
                c -= 1
            if c > 0 and toks[c - 1].text == "template":
                is_template = True
        # return type
        if toks[k].text != "void":
            raise BuildError(f"{self.file}: kernel function must return void (near '{toks[k].text}')")
        name = toks[k + 1].text
        p_open = k + 2
        if toks[p_open].text != "(":
            raise BuildError(f"{self.file}: cannot parse kernel {name}")
        p_close = match_close(toks, p_open, "(", ")")
        params = []
        for part in split_params(toks, p_open + 1, p_close):
            p = parse_param(toks, part, name)
            if p:
                params.append(p)
        # remove parameter attributes
        z = p_open
        while z < p_close:
            if is_attr_start(toks, z):
                j = attr_group_end(toks, z)
                self.remove_tokens(z, j)
                z = j + 1
            else:
                z += 1
        z = p_close + 1
        # trailing attributes after the parameter list
        while is_attr_start(toks, z):
            j = attr_group_end(toks, z)
            self.remove_tokens(z, j)
            z = j + 1
        if toks[z].text == ";":
            return z + 1
        if toks[z].text != "{":
            raise BuildError(f"{self.file}: cannot parse body of kernel {name}")
        body_end = match_close(toks, z, "{", "}")
        self.rewrite_tg_decls(z + 1, body_end)
        self.kernels[name] = Kernel(name, is_template, params, self.file)
        if not is_template:
            self.instances.append((host or name, name, name, self.namespaces()))
        return body_end + 1

    def rewrite_tg_decls(self, lo, hi):
        toks = self.toks
        i = lo
        while i < hi:
            t = toks[i]
            if t.text == "__mlxk_as_threadgroup":
                p = i - 1
                while p >= lo and toks[p].kind == "dir":
                    p -= 1
                align = None
                start = i
                if p >= lo and toks[p].text == ")":  # alignas(N) threadgroup T x[...];
                    q = p
                    depth = 0
                    while q >= lo:
                        if toks[q].text == ")":
                            depth += 1
                        elif toks[q].text == "(":
                            depth -= 1
                            if depth == 0:
                                break
                        q -= 1
                    if q - 1 >= lo and toks[q - 1].text == "alignas":
                        align = " ".join(x.text for x in toks[q + 1:p])
                        start = q - 1
                        p = q - 2
                        while p >= lo and toks[p].kind == "dir":
                            p -= 1
                if toks[p].text in ("{", "}", ";", ":") or p < lo:
                    e = i
                    depth = 0
                    while not (toks[e].text == ";" and depth == 0):
                        if toks[e].text in "([{":
                            depth += 1
                        elif toks[e].text in ")]}":
                            depth -= 1
                        e += 1
                    self.tg_decl(i, e, start, align)
                    i = e + 1
                    continue
            i += 1

    def tg_decl(self, i, e, start=None, align=None):
        """toks[i] == threadgroup marker, toks[e] == ';'; start: first token of the statement
        (an alignas(...) before the marker), align: the alignas argument."""
        toks = self.toks
        start = i if start is None else start
        # type: tokens up to the first declarator name (identifier followed by [ , ; or =)
        k = i + 1
        angle = 0
        while k < e:
            t = toks[k]
            if t.text == "<":
                angle += 1
            elif t.text == ">":
                angle -= 1
            elif t.text == ">>":
                angle -= 2
            elif angle == 0 and t.kind == "id" and toks[k + 1].text in ("[", ",", ";", "="):
                if t.text not in ("const", "volatile"):
                    break
            k += 1
        type_text = " ".join(x.text for x in toks[i + 1:k])
        if any(x.text in ("*", "&", "&&") for x in toks[i + 1:k]) or k >= e:
            return  # a (private) pointer or reference to threadgroup memory, not an allocation
        decls = split_params(toks, k, e)
        out = []
        for d in decls:
            dname = toks[d[0]].text
            dims = " ".join(toks[x].text for x in d[1:])
            if "=" in dims:
                raise BuildError(f"{self.file}: threadgroup variable '{dname}' cannot have an initializer")
            site = self.site
            self.site += 1
            self.tg_sites.append(site)
            full = f"{type_text} {dims}".strip()
            al = f"alignof({type_text})" if align is None else \
                f"(alignof({type_text}) > ({align}) ? alignof({type_text}) : ({align}))"
            if dims:
                out.append(
                    f"__mlxk_as_threadgroup {type_text} (&{dname}){dims} = "
                    f"*(__mlxk_as_threadgroup {type_text} (*){dims})__mlxk_tg_alloc({site}, sizeof({full}), "
                    f"{al}, \"{dname}\");")
            else:
                out.append(
                    f"__mlxk_as_threadgroup {type_text} &{dname} = "
                    f"*(__mlxk_as_threadgroup {type_text} *)__mlxk_tg_alloc({site}, sizeof({type_text}), "
                    f"{al}, \"{dname}\");")
        a, b = toks[start].start, toks[e].end
        nl = self.src.count("\n", a, b)
        self.edit(a, b, " ".join(out) + "\n" * nl)

    def apply(self):
        out = []
        pos = 0
        for a, b, text in sorted(self.edits):
            if a < pos:
                continue
            out.append(self.src[pos:a])
            out.append(text)
            pos = b
        out.append(self.src[pos:])
        return "".join(out)


# ----------------------------------------------------------------------------------------
PRELUDE = r"""
#define __mlxk_as_device __global
#define __mlxk_as_threadgroup __local
#define __mlxk_as_constant __global const
#define __mlxk_as_thread
#define global __mlxk_kw_global
#define local __mlxk_kw_local
#define kernel __mlxk_kw_kernel
#define generic __mlxk_kw_generic
#define read_only __mlxk_kw_read_only
#define write_only __mlxk_kw_write_only
#define read_write __mlxk_kw_read_write
#define pipe __mlxk_kw_pipe
#define atomic_int __mlxk_atomic_int
#define atomic_uint __mlxk_atomic_uint
#define atomic_long __mlxk_atomic_long
#define atomic_ulong __mlxk_atomic_ulong
#define atomic_float __mlxk_atomic_float
#define atomic_double __mlxk_atomic_double
#define atomic_half __mlxk_atomic_half
#define atomic_flag __mlxk_atomic_flag
#define atomic_intptr_t __mlxk_atomic_intptr_t
#define atomic_uintptr_t __mlxk_atomic_uintptr_t
#define atomic_size_t __mlxk_atomic_size_t
#define atomic_ptrdiff_t __mlxk_atomic_ptrdiff_t
#define memory_order __mlxk_memory_order
#define memory_scope __mlxk_memory_scope
"""

TRAMPOLINE_HELPERS = r"""
template <class F, int I> struct __mlxk_argt;
template <class R, class... A, int I> struct __mlxk_argt<R(A...), I> { typedef __type_pack_element<I, A...> type; };
template <class P> P __mlxk_get(int role, int idx) {
  typedef metal::remove_reference_t<P> V;
  if constexpr (metal::is_pointer_v<V>) {
    if (role == 0) return (V)__mlxk_buffer(idx);
    return (V)__mlxk_tg_param(idx);
  } else if constexpr (metal::is_reference_v<P>) {
    return *(V*)__mlxk_buffer(idx);
  } else {
    __mlxk_tinfo* t = __mlxk_ti();
    const uint zero[3] = {0, 0, 0};
    uint sc[3] = {0, 0, 0};
    const uint* v = zero;
    switch (role) {
      case 2: v = t->tpig; break; case 3: v = t->tpitg; break; case 4: v = t->tgpig; break;
      case 5: v = t->tptg; break; case 6: v = t->tgpg; break; case 7: v = t->gsize; break;
      case 8: sc[0] = t->tiitg; v = sc; break; case 9: sc[0] = t->tiisg; v = sc; break;
      case 10: sc[0] = t->sgitg; v = sc; break; case 11: sc[0] = t->sgptg; v = sc; break;
      case 12: sc[0] = t->simd_size; v = sc; break; case 14: sc[0] = t->tiitg % 4; v = sc; break;
      default: break;
    }
    if constexpr (metal::_sim::vtr<P>::is) {
      metal::remove_cv_t<P> r;
      for (int i = 0; i < metal::_sim::vtr<P>::n; ++i) r[i] = v[i];
      return r;
    } else {
      return P(v[0]);
    }
  }
}
"""


def gen_trampolines(rw, entries):
    """One extern "C" entry per host name. The call is made from a helper inside the kernel's
    namespaces, so names in the kernel's parameter types and instantiation resolve as there."""
    code = [TRAMPOLINE_HELPERS]
    for ent in entries:
        k = rw.kernels[ent["kernel"]]
        args = []
        for n, p in enumerate(k.params):
            # template kernels: parameter types from decltype(func<args>); plain ones: as written
            ty = f"typename ::__mlxk_argt<__F, {n}>::type" if k.is_template else p["type"]
            args.append(f"::__mlxk_get<{ty}>({ROLE_CODE[p['role']]}, {p['index']})")
        td = f"  typedef decltype({ent['expr']}) __F;\n" if k.is_template else ""
        ns = ent["ns"]
        inner = f"__mlxk_call_{ent['sym']}"
        opens = "".join(f"namespace {x} {{ " if x else "namespace { " for x in ns)
        closes = "} " * len(ns)
        named = [x for x in ns if x]
        qual = ("::" + "::".join(named) + "::") if named else ""
        code.append(f"{opens}\nstatic inline void {inner}(void) {{\n{td}  {ent['expr']}({', '.join(args)});\n}}\n"
                    f"{closes}\n"
                    f'extern "C" void {ent["sym"]}(void) {{ {qual}{inner}(); }}\n')
    return "\n".join(code)


def c_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gen_registry(entries, nsites):
    lines = ['#include <stddef.h>',
             'struct mlxk_kdesc { const char* name; void (*fn)(void); int nbuf; const int* bufs; const int* buf_const;',
             '  int ntg; const int* tgs; const char* func; };']
    for e in entries:
        lines.append(f'extern "C" void {e["sym"]}(void);')
    for n, e in enumerate(entries):
        bufs = e["bufs"] or [-1]
        lines.append(f"static const int b{n}[] = {{{', '.join(str(x) for x in bufs)}}};")
        consts = e["consts"] or [0]
        lines.append(f"static const int c{n}[] = {{{', '.join(str(x) for x in consts)}}};")
        tgs = e["tgs"] or [-1]
        lines.append(f"static const int t{n}[] = {{{', '.join(str(x) for x in tgs)}}};")
    lines.append('extern "C" __attribute__((visibility("hidden"))) const mlxk_kdesc __mlxk_registry[] = {')
    for n, e in enumerate(entries):
        lines.append(f'  {{{c_str(e["host"])}, {e["sym"]}, {len(e["bufs"])}, b{n}, c{n}, {len(e["tgs"])}, t{n}, '
                     f'{c_str(e["expr"])}}},')
    if not entries:
        lines.append('  {"", 0, 0, 0, 0, 0, 0, ""},')
    lines.append("};")
    lines.append(f'extern "C" __attribute__((visibility("hidden"))) const int __mlxk_registry_count = {len(entries)};')
    lines.append(f'extern "C" __attribute__((visibility("hidden"))) const int __mlxk_tg_site_count = {max(nsites, 1)};')
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# LLVM IR instrumentation
def _balanced(s, i):
    """Parses an LLVM type starting at s[i]; returns end index."""
    c = s[i]
    if c in "<{[":
        close = {"<": ">", "{": "}", "[": "]"}[c]
        depth = 0
        j = i
        while j < len(s):
            if s[j] in "<{[":
                depth += 1
            elif s[j] in ">}]":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return len(s)
    if s.startswith("ptr addrspace(", i):
        return s.index(")", i) + 1
    m = re.compile(r"[%@]?[-\w.$\"]+").match(s, i)
    return m.end() if m else i


SCALAR_SIZE = {"i1": 1, "i8": 1, "i16": 2, "i32": 4, "i64": 8, "i128": 16, "half": 2, "bfloat": 2,
               "float": 4, "double": 8, "ptr": 8}


def type_size_expr(ty):
    ty = ty.strip()
    m = re.fullmatch(r"<(\d+) x (\w+)>", ty)
    if m and m.group(2) in SCALAR_SIZE:
        return str(int(m.group(1)) * SCALAR_SIZE[m.group(2)])
    if ty in SCALAR_SIZE:
        return str(SCALAR_SIZE[ty])
    if ty.startswith("ptr"):
        return "8"
    return f"ptrtoint (ptr getelementptr ({ty}, ptr null, i32 1) to i64)"


def is_aggregate(ty):
    ty = ty.strip()
    return ty.startswith("%") or ty.startswith("{") or ty.startswith("[")


LOAD_RE = re.compile(r"^\s*%[-\w.$\"]+ = load (?:atomic )?(?:volatile )?")
STORE_RE = re.compile(r"^\s*store (?:atomic )?(?:volatile )?")
PTR_OPERAND = r"ptr addrspace\(([134])\)(?: (?:noundef|nonnull|align \d+|dereferenceable\(\d+\)|noalias|nocapture|readonly|writeonly))* (%[-\w.$\"]+|@[-\w.$\"]+)"
MEM_INTR_RE = re.compile(r"call void @llvm\.(memcpy|memmove|memset)(?:\.inline)?\.([\w.]+)\((.*)\)")
# hook suffix per address space: 3 = threadgroup, 4 = generic (checked if it points into the
# threadgroup arena), 1 = device (only with device checks: precise buffer bounds)
AS_SUFFIX = {"3": "", "4": "_g", "1": "_d"}


def split_args(s):
    out, cur, depth = [], [], 0
    for ch in s:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur).strip())
    return out


def instrument_ir(ir, device_checks=False):
    """Inserts shadow-memory / bounds check calls before memory accesses; returns the new IR
    and the call graph {function: callees} of the functions it defines."""
    out = []
    used = set()
    funcs = {}
    cur_fn = None
    spaces = ("3", "4", "1") if device_checks else ("3", "4")

    def hook(ins, kind, asn, ptr, size):
        if asn not in spaces or not ptr:
            return
        fn = f"__mlxk_chk_{kind}{AS_SUFFIX[asn]}"
        used.add((fn, asn))
        ins.append(f"  call void @{fn}(ptr addrspace({asn}) {ptr}, {size})")

    for line in ir.split("\n"):
        ins = []
        if line.startswith("define "):
            m = re.search(r"@([-\w.$\"]+)\(", line)
            cur_fn = m.group(1) if m else None
            funcs.setdefault(cur_fn, set())
        elif line.startswith("}"):
            cur_fn = None
        elif cur_fn is not None:
            for cm in re.finditer(r"(?:call|invoke)\s[^@]*@([-\w.$\"]+)\(", line):
                funcs[cur_fn].add(cm.group(1))
            m = LOAD_RE.match(line)
            if m:
                ty_end = _balanced(line, m.end())
                ty = line[m.end():ty_end]
                pm = re.compile(r", " + PTR_OPERAND).match(line, ty_end)
                if pm:
                    kind = "atld" if " atomic " in line[:m.end() + 1] else ("ld_agg" if is_aggregate(ty) else "ld")
                    hook(ins, kind, pm.group(1), pm.group(2), f"i64 {type_size_expr(ty)}")
            else:
                m = STORE_RE.match(line)
                if m:
                    ty_end = _balanced(line, m.end())
                    ty = line[m.end():ty_end]
                    pm = re.search(r", " + PTR_OPERAND + r"(?: syncscope\(\"[^\"]*\"\))?(?: [a-z_]+)?(?:, align \d+)?(?:, !.*)?$", line)
                    if pm:
                        kind = "atst" if line.lstrip().startswith("store atomic") else "st"
                        hook(ins, kind, pm.group(1), pm.group(2), f"i64 {type_size_expr(ty)}")
                elif " atomicrmw " in line or " cmpxchg " in line:
                    pm = re.search(r"(?:atomicrmw|cmpxchg)(?: weak)?(?: volatile)?(?: \w+)? " + PTR_OPERAND +
                                   r", ([^,]+?) [-%\w.]+", line)
                    if pm:
                        sz = f"i64 {type_size_expr(pm.group(3))}"
                        hook(ins, "atld", pm.group(1), pm.group(2), sz)
                        hook(ins, "atst", pm.group(1), pm.group(2), sz)
                else:
                    mm = MEM_INTR_RE.search(line)
                    if mm:
                        kind, args = mm.group(1), split_args(mm.group(3))

                        def ptrinfo(a):
                            am = re.match(r"ptr(?: addrspace\((\d+)\))?.* ([%@][-\w.$\"]+)$", a)
                            return (am.group(1) or "0", am.group(2)) if am else ("0", None)

                        n_arg = args[2]
                        nn = n_arg if n_arg.startswith("i64") else "i64 " + n_arg.split()[-1]
                        das, dp = ptrinfo(args[0])
                        if kind != "memset":
                            sas, sp = ptrinfo(args[1])
                            hook(ins, "ld_agg", sas, sp, nn)
                        hook(ins, "st", das, dp, nn)
        out.extend(ins)
        out.append(line)
    decls = set()
    for fn, asn in used:
        decls.add(f"declare void @{fn}(ptr addrspace({asn}), i64)")
    return "\n".join(out) + "\n" + "\n".join(sorted(decls)) + "\n", funcs


def check_recursion(funcs):
    defined = set(funcs)
    color = {}
    stack = []

    def dfs(f):
        color[f] = 1
        stack.append(f)
        for g in funcs.get(f, ()):
            if g not in defined:
                continue
            if color.get(g) == 1:
                cyc = stack[stack.index(g):] + [g]
                return cyc
            if g not in color:
                r = dfs(g)
                if r:
                    return r
        stack.pop()
        color[f] = 2
        return None

    for f in funcs:
        if f not in color:
            r = dfs(f)
            if r:
                return r
    return None


def demangle(names):
    tool = shutil.which("llvm-cxxfilt-19") or shutil.which("llvm-cxxfilt") or shutil.which("c++filt")
    if not tool:
        return names
    try:
        r = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, timeout=30)
        return r.stdout.split("\n")[: len(names)]
    except (OSError, subprocess.SubprocessError):
        return names


# ----------------------------------------------------------------------------------------
def host_triple(clang):
    return subprocess.run([clang, "-dumpmachine"], capture_output=True, text=True).stdout.strip()


def cl_flags(clang):
    return ["-x", "clcpp", "-cl-std=clc++2021", "-cl-no-stdinc", "-nostdinc",
            "-target", host_triple(clang), "-Xclang", "-ffake-address-space-map",
            "-Xclang", "-cl-ext=-cl_khr_fp64,-__opencl_c_fp64",
            "-fno-exceptions", "-fno-rtti"]


# big private arrays must touch the guard page below a fiber stack instead of jumping over it
CODEGEN_FLAGS = ["-fstack-clash-protection"]


WARN_FLAGS = ["-Wall", "-Wno-unused", "-Wno-unused-parameter", "-Wno-unknown-pragmas", "-Wno-duplicate-decl-specifier",
              "-Wno-unknown-attributes", "-Wno-gnu-anonymous-struct", "-Wno-nested-anon-types",
              "-Wno-c++17-extensions", "-Wno-c++20-extensions", "-Wno-missing-braces", "-Wno-sign-compare",
              "-Werror=return-type", "-Werror=uninitialized", "-Werror=sometimes-uninitialized",
              "-Werror=array-bounds", "-Werror=shift-count-overflow", "-Werror=shift-count-negative",
              "-Werror=division-by-zero", "-Werror=vla", "-Werror=int-to-pointer-cast",
              "-Werror=return-stack-address", "-Werror=dangling", "-Werror=null-dereference",
              "-Werror=undefined-inline", "-Werror=unsequenced", "-Werror=array-bounds-pointer-arithmetic",
              "-Werror=uninitialized-const-reference"]
# Only categories that indicate real bugs are errors: Apple's compiler accepts code that merely
# warns, and the simulator must not reject it.


def compile_metal(clang, path, fileno, site_base, incs, defs, work, cpu_flags, device_checks=False):
    base = f"k{fileno}"
    dep = os.path.join(work, base + ".d")
    pre = run([clang, "-E", "-MD", "-MF", dep] + cl_flags(clang) + ["-isystem", INCLUDE_DIR]
              + [f"-I{d}" for d in incs] + [f"-D{d}" for d in defs] + [path], f"preprocessing {path}",
              metal=True).stdout
    rw = Rewriter(pre, fileno, site_base, path)
    body = rw.run()
    entries = []
    for n, (host, expr, kname, ns) in enumerate(rw.instances):
        if kname not in rw.kernels:
            raise BuildError(f"{path}: instantiation '{host}' of unknown kernel '{kname}'")
        k = rw.kernels[kname]
        bufs = [p["index"] for p in k.params if p["role"] == "buffer"]
        if len(set(bufs)) != len(bufs):
            raise BuildError(f"{path}: kernel {kname} uses a [[buffer(i)]] index twice")
        entries.append({"host": host, "expr": expr, "kernel": kname, "ns": ns, "sym": f"__mlxk_entry_{fileno}_{n}",
                        "bufs": bufs, "consts": [1 if p["const"] else 0 for p in k.params if p["role"] == "buffer"],
                        "tgs": [p["index"] for p in k.params if p["role"] == "tgmem"], "file": path})
    src = PRELUDE + body + "\n" + gen_trampolines(rw, entries)
    cpp = os.path.join(work, base + ".clcpp")
    with open(cpp, "w") as f:
        f.write(src)
    ll = os.path.join(work, base + ".ll")
    run([clang, "-S", "-emit-llvm", "-O2", "-fPIC", "-fvisibility=hidden"] + CODEGEN_FLAGS + cl_flags(clang) + cpu_flags + WARN_FLAGS + [cpp, "-o", ll],
        f"compiling {path}", metal=True)
    with open(ll) as f:
        ir = f.read()
    ir2, funcs = instrument_ir(ir, device_checks)
    cyc = check_recursion(funcs)
    if cyc:
        raise BuildError(f"{path}: recursion is not allowed in Metal: " + " -> ".join(demangle(cyc)))
    ll2 = os.path.join(work, base + ".inst.ll")
    with open(ll2, "w") as f:
        f.write(ir2)
    obj = os.path.join(work, base + ".o")
    run([clang, "-c", "-O2", "-fPIC", "-Wno-override-module"] + CODEGEN_FLAGS + cpu_flags + [ll2, "-o", obj],
        f"compiling instrumented IR of {path}")
    deps = []
    try:
        with open(dep) as f:
            txt = f.read().replace("\\\n", " ")
        deps = txt.split(":", 1)[1].split() if ":" in txt else []
    except OSError:
        pass
    if rw.site - site_base > SITES_PER_FILE:
        raise BuildError(f"{path}: more than {SITES_PER_FILE} threadgroup variable declarations")
    return obj, entries, rw.site, deps


SITES_PER_FILE = 1024  # threadgroup variable declarations per .metal file (ids are global)


def runtime_obj(clang, cache_dir, cpu_flags):
    srcs = [os.path.join(RUNTIME_DIR, "sim_runtime.cpp"), os.path.join(INCLUDE_DIR, "mlxk_metal_sim.h")]
    h = hashlib.sha256()
    for s in srcs:
        with open(s, "rb") as f:
            h.update(f.read())
    extra = os.environ.get("MLXK_SIM_RUNTIME_FLAGS", "").split()  # e.g. -DMLXK_SIM_USE_UCONTEXT
    h.update(clang.encode())
    h.update(" ".join(cpu_flags + extra).encode())
    obj = os.path.join(cache_dir, f"sim_runtime-{h.hexdigest()[:16]}.o")
    if os.path.exists(obj):
        return obj
    os.makedirs(cache_dir, exist_ok=True)
    tmp = obj + f".{os.getpid()}.tmp"
    run([clang, "-c", "-O2", "-std=c++17", "-fPIC", "-fvisibility=hidden", "-U_FORTIFY_SOURCE", "-I", INCLUDE_DIR] + extra
        + [srcs[0], "-o", tmp],
        "compiling the simulator runtime")
    os.replace(tmp, obj)
    return obj


def cpu_feature_flags():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        if re.search(r"^flags\s*:.*\bf16c\b", info, re.M):
            return ["-mf16c"]
    except OSError:
        pass
    return []


def build(sources, out, clang=None, includes=(), defines=(), keep=None, cache_dir=None, depfile=None,
          device_checks=False):
    """Builds lib `out` from .metal `sources`; returns its path. Raises BuildError.
    depfile: also write a Makefile-style dependency file (for CMake's DEPFILE).
    device_checks: check every device-memory access against the exact bounds of its buffer
    (slower; without it, out-of-bounds accesses are caught by guard pages only)."""
    clang = clang or find_clang()
    if not clang:
        raise BuildError(f"no clang++ >= {MIN_CLANG} found (set MLXK_SIM_CLANG)")
    v = clang_version(clang)
    if v is None or v < MIN_CLANG:
        raise BuildError(f"{clang}: clang >= {MIN_CLANG} required")
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cache_dir = cache_dir or os.path.join(os.path.dirname(out), ".metalsim-cache")
    work = keep or tempfile.mkdtemp(prefix="metalsim-")
    os.makedirs(work, exist_ok=True)
    cpu = cpu_feature_flags()
    try:
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
            rt = ex.submit(runtime_obj, clang, cache_dir, cpu)
            # tg allocation sites must be unique across files: give each file a disjoint range
            futs = [ex.submit(compile_metal, clang, os.path.abspath(s), n, n * SITES_PER_FILE, list(includes),
                              list(defines), work, cpu, device_checks) for n, s in enumerate(sources)]
            results = [f.result() for f in futs]
            rt_obj = rt.result()
        objs, entries, nsites = [], [], 1
        seen = {}
        all_deps = set()
        for obj, ents, site_end, deps in results:
            objs.append(obj)
            all_deps.update(os.path.abspath(d) for d in deps)
            for e in ents:
                if e["host"] in seen:
                    raise BuildError(f"kernel host name '{e['host']}' defined twice ({seen[e['host']]} and {e['file']})")
                seen[e["host"]] = e["file"]
                entries.append(e)
            nsites = max(nsites, site_end)
        reg = os.path.join(work, "registry.cpp")
        with open(reg, "w") as f:
            f.write(gen_registry(entries, nsites))
        vs = os.path.join(work, "exports.map")
        with open(vs, "w") as f:
            f.write("{ global: mlxk_sim_*; local: *; };\n")
        tmp_out = out + f".{os.getpid()}.tmp"
        link = [clang, "-shared", "-fPIC", "-O1", "-o", tmp_out, reg] + objs + [rt_obj, "-lm", "-lpthread"]
        if sys.platform.startswith("linux"):
            link.append(f"-Wl,--version-script={vs}")
        run(link, "linking")
        os.replace(tmp_out, out)
        if depfile:
            all_deps.update(os.path.join(d, f) for d, f in ((RUNTIME_DIR, "sim_runtime.cpp"), (HERE, "metalsim_build.py")))
            with open(depfile, "w") as f:
                f.write(out.replace(" ", "\\ ") + ": " + " \\\n  ".join(sorted(x.replace(" ", "\\ ") for x in all_deps)) + "\n")
        return out
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="*", help=".metal files")
    ap.add_argument("--out", help="output shared library (lib*.so)")
    ap.add_argument("--find-clang", action="store_true", help="print the clang++ find_clang() picks and exit "
                    "(exit status 1 if none)")
    ap.add_argument("--depfile", default=None, help="write a Makefile-style dependency file")
    ap.add_argument("--check-device-bounds", action="store_true",
                    help="check every device memory access against its buffer's exact bounds (slower)")
    ap.add_argument("--clang", default=None, help="clang++ to use (default: find_clang())")
    ap.add_argument("-I", dest="includes", action="append", default=[], help="include directory")
    ap.add_argument("-D", dest="defines", action="append", default=[], help="preprocessor definition")
    ap.add_argument("--keep", default=None, help="keep intermediate files in this directory")
    ap.add_argument("--cache-dir", default=None, help="cache for the compiled runtime")
    a = ap.parse_args(argv)
    if a.find_clang:
        c = find_clang()
        if c:
            print(c)
        return 0 if c else 1
    if not a.out or not a.sources:
        ap.error("--out and at least one source are required")
    try:
        build(a.sources, a.out, a.clang, a.includes, a.defines, a.keep, a.cache_dir, a.depfile,
              a.check_device_bounds)
    except BuildError as e:
        print(f"metalsim_build: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
