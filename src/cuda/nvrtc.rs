//! NVRTC, loaded at run time from a library we locate ourselves.
//!
//! cudarc's own NVRTC loader searches a fixed list of names and panics when none loads; the
//! NVRTC that pip-installed torch brings (`site-packages/nvidia/cu13/lib/libnvrtc.so.13`, or
//! `nvidia/cuda_nvrtc/lib/libnvrtc.so.12`) is on no search path and, for CUDA 13, not in that
//! list. So we `dlopen` it by path: first the path the Python layer found
//! ([`set_library_hint`]), then `$INV_CONV_NVRTC`, then the usual sonames. Failures are
//! [`Error::Device`] (no library) or [`Error::Nvrtc`] (compile errors, with the log); nothing
//! here panics. NVRTC needs no driver and no GPU, so compiling works on any machine
//! ([`compile`] backs `compile_kernels_check`).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Mutex;

use crate::error::{Error, Result};

type Program = *mut c_void;
type Status = c_int;

type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> Status;
type ErrorStringFn = unsafe extern "C" fn(Status) -> *const c_char;
type CreateFn = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> Status;
type CompileFn = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> Status;
type SizeFn = unsafe extern "C" fn(Program, *mut usize) -> Status;
type BytesFn = unsafe extern "C" fn(Program, *mut c_char) -> Status;
type DestroyFn = unsafe extern "C" fn(*mut Program) -> Status;

#[derive(Clone, Copy)]
struct Api {
    version: VersionFn,
    error_string: ErrorStringFn,
    create: CreateFn,
    compile: CompileFn,
    log_size: SizeFn,
    log: BytesFn,
    cubin_size: SizeFn,
    cubin: BytesFn,
    destroy: DestroyFn,
}

/// A loaded NVRTC: where it came from and its version.
#[derive(Clone)]
pub struct Nvrtc {
    pub path: String,
    pub version: (i32, i32),
    api: Api,
}

static HINT: Mutex<Option<String>> = Mutex::new(None);
static LOADED: Mutex<Option<Nvrtc>> = Mutex::new(None);

/// Remembers the library path the Python layer found (used by the next load attempt).
pub fn set_library_hint(path: Option<String>) {
    *HINT.lock().unwrap_or_else(|e| e.into_inner()) = path;
}

const SONAMES: [&str; 5] = [
    "libnvrtc.so",
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so.11.2",
    "libnvrtc.dylib",
];

#[cfg(unix)]
mod dl {
    use std::ffi::{c_char, c_int, c_void, CStr};
    extern "C" {
        fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
        fn dlerror() -> *mut c_char;
    }
    const RTLD_NOW: c_int = 2;

    pub fn open(name: &CStr) -> Result<*mut c_void, String> {
        let h = unsafe { dlopen(name.as_ptr(), RTLD_NOW) };
        if h.is_null() {
            Err(last_error())
        } else {
            Ok(h)
        }
    }

    pub fn symbol(h: *mut c_void, name: &CStr) -> Result<*mut c_void, String> {
        let s = unsafe { dlsym(h, name.as_ptr()) };
        if s.is_null() {
            Err(last_error())
        } else {
            Ok(s)
        }
    }

    fn last_error() -> String {
        let e = unsafe { dlerror() };
        if e.is_null() {
            "unknown dlopen error".into()
        } else {
            unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
        }
    }
}

#[cfg(not(unix))]
mod dl {
    use std::ffi::{c_void, CStr};
    pub fn open(_: &CStr) -> Result<*mut c_void, String> {
        Err("loading NVRTC is implemented for Linux only".into())
    }
    pub fn symbol(_: *mut c_void, _: &CStr) -> Result<*mut c_void, String> {
        Err("loading NVRTC is implemented for Linux only".into())
    }
}

fn load_from(name: &str) -> std::result::Result<Nvrtc, String> {
    let cname = CString::new(name).map_err(|e| e.to_string())?;
    let h = dl::open(&cname)?;
    macro_rules! sym {
        ($s:literal, $t:ty) => {{
            let p = dl::symbol(
                h,
                CStr::from_bytes_with_nul(concat!($s, "\0").as_bytes()).unwrap(),
            )?;
            // SAFETY: the symbol is NVRTC's C function of that name; the field's type is its
            // prototype from nvrtc.h.
            unsafe { std::mem::transmute::<*mut c_void, $t>(p) }
        }};
    }
    let api = Api {
        version: sym!("nvrtcVersion", VersionFn),
        error_string: sym!("nvrtcGetErrorString", ErrorStringFn),
        create: sym!("nvrtcCreateProgram", CreateFn),
        compile: sym!("nvrtcCompileProgram", CompileFn),
        log_size: sym!("nvrtcGetProgramLogSize", SizeFn),
        log: sym!("nvrtcGetProgramLog", BytesFn),
        cubin_size: sym!("nvrtcGetCUBINSize", SizeFn),
        cubin: sym!("nvrtcGetCUBIN", BytesFn),
        destroy: sym!("nvrtcDestroyProgram", DestroyFn),
    };
    let (mut major, mut minor) = (0, 0);
    let status = unsafe { (api.version)(&mut major, &mut minor) };
    if status != 0 {
        return Err(format!("nvrtcVersion failed with status {status}"));
    }
    Ok(Nvrtc {
        path: name.to_string(),
        version: (major, minor),
        api,
    })
}

/// The NVRTC library, loaded on first use (a failed attempt is retried next time, so a hint
/// set later still counts).
pub fn library() -> Result<Nvrtc> {
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lib) = loaded.as_ref() {
        return Ok(lib.clone());
    }
    let mut candidates: Vec<String> = Vec::new();
    if let Some(h) = HINT.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        candidates.push(h);
    }
    if let Ok(p) = std::env::var("INV_CONV_NVRTC") {
        if !p.is_empty() {
            candidates.push(p);
        }
    }
    candidates.extend(SONAMES.iter().map(|s| s.to_string()));
    let mut tried = Vec::new();
    for c in &candidates {
        match load_from(c) {
            Ok(lib) => {
                *loaded = Some(lib.clone());
                return Ok(lib);
            }
            Err(e) => tried.push(format!("{c}: {e}")),
        }
    }
    Err(Error::Device(format!(
        "NVRTC (the CUDA run-time compiler) could not be loaded; install the `nvidia-cuda-nvrtc` \
         package that torch uses, or a CUDA toolkit, or set INV_CONV_NVRTC to the path of \
         libnvrtc.so. Tried: {}",
        tried.join("; ")
    )))
}

impl Nvrtc {
    fn status_name(&self, s: Status) -> String {
        let p = unsafe { (self.api.error_string)(s) };
        if p.is_null() {
            format!("NVRTC status {s}")
        } else {
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    }

    fn check(&self, s: Status, what: &str) -> Result<()> {
        if s == 0 {
            Ok(())
        } else {
            Err(Error::Nvrtc(format!("{what}: {}", self.status_name(s))))
        }
    }

    /// Compiles `source` to a cubin for `arch` (e.g. "sm_90"). Returns the cubin and the log.
    pub fn compile(
        &self,
        source: &str,
        name: &str,
        arch: &str,
        extra: &[&str],
    ) -> Result<(Vec<u8>, String)> {
        let src = CString::new(source)
            .map_err(|_| Error::Nvrtc("kernel source holds a NUL byte".into()))?;
        let cname = CString::new(name).map_err(|_| Error::Nvrtc("bad program name".into()))?;
        let mut prog: Program = std::ptr::null_mut();
        self.check(
            unsafe {
                (self.api.create)(
                    &mut prog,
                    src.as_ptr(),
                    cname.as_ptr(),
                    0,
                    std::ptr::null(),
                    std::ptr::null(),
                )
            },
            "nvrtcCreateProgram",
        )?;
        let result = self.compile_program(prog, arch, extra);
        unsafe { (self.api.destroy)(&mut prog) };
        result
    }

    fn compile_program(
        &self,
        prog: Program,
        arch: &str,
        extra: &[&str],
    ) -> Result<(Vec<u8>, String)> {
        let mut opts: Vec<CString> = vec![
            CString::new(format!("--gpu-architecture={arch}")).unwrap(),
            CString::new("--std=c++17").unwrap(),
        ];
        for e in extra {
            opts.push(CString::new(*e).map_err(|_| Error::Nvrtc("bad option".into()))?);
        }
        let ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        let status = unsafe { (self.api.compile)(prog, ptrs.len() as c_int, ptrs.as_ptr()) };
        let mut log_len = 0usize;
        let mut log = String::new();
        if unsafe { (self.api.log_size)(prog, &mut log_len) } == 0 && log_len > 1 {
            let mut buf = vec![0u8; log_len];
            if unsafe { (self.api.log)(prog, buf.as_mut_ptr() as *mut c_char) } == 0 {
                log = String::from_utf8_lossy(&buf[..log_len - 1]).into_owned();
            }
        }
        if status != 0 {
            return Err(Error::Nvrtc(format!(
                "compiling the kernels for {arch} with NVRTC {}.{} failed ({}):\n{log}",
                self.version.0,
                self.version.1,
                self.status_name(status)
            )));
        }
        let mut size = 0usize;
        self.check(
            unsafe { (self.api.cubin_size)(prog, &mut size) },
            "nvrtcGetCUBINSize",
        )?;
        let mut cubin = vec![0u8; size];
        self.check(
            unsafe { (self.api.cubin)(prog, cubin.as_mut_ptr() as *mut c_char) },
            "nvrtcGetCUBIN",
        )?;
        Ok((cubin, log))
    }
}
