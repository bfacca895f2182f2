//! The CUDA driver (through cudarc, loaded at run time) and the per-device module cache.
//!
//! Each device gets, at first use, the kernels compiled by NVRTC for its own compute capability
//! and loaded into its primary context (the one PyTorch uses). The module and its functions
//! live as long as the process; nothing here allocates device memory or synchronizes.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use cudarc::driver::sys::{self, CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{result, CudaContext, DriverError};

use super::kernels;
use super::nvrtc;
use crate::error::{Error, Result};

/// A driver error as our error, with the CUDA error name (e.g. CUDA_ERROR_INVALID_VALUE).
pub(crate) fn cuda_err(what: &str, e: DriverError) -> Error {
    let name = e
        .error_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    let text = e
        .error_string()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Error::Cuda(format!("{name} ({text}) in {what}"))
}

/// Runs driver work, turning a cudarc panic (e.g. a symbol missing from an old driver) into an
/// error instead of letting it unwind into Python.
pub(crate) fn guarded<R>(what: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Device(format!(
                "CUDA driver failure in {what}: {msg}"
            )))
        }
    }
}

/// Loads the driver library and initialises it; a clear error if it is missing.
pub fn driver() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        // cudarc's loader panics when the library is missing: look first.
        if !unsafe { sys::is_culib_present() } {
            return Err("the NVIDIA CUDA driver library (libcuda.so.1) was not found: no NVIDIA driver is installed".into());
        }
        guarded("cuInit", || result::init().map_err(|e| cuda_err("cuInit", e))).map_err(|e| e.to_string())
    })
    .clone()
    .map_err(Error::Device)
}

/// Number of CUDA devices the driver sees (0 when there is no driver).
pub fn device_count() -> Result<usize> {
    driver()?;
    guarded("cuDeviceGetCount", || {
        result::device::get_count()
            .map(|n| n.max(0) as usize)
            .map_err(|e| cuda_err("cuDeviceGetCount", e))
    })
}

#[derive(Clone, Copy)]
pub(crate) struct Function(pub(crate) sys::CUfunction);
// SAFETY: a CUfunction handle is a plain identifier that the driver allows to be used from any
// thread (with the owning context current).
unsafe impl Send for Function {}
unsafe impl Sync for Function {}

/// One device's compiled kernels and the properties the launch plans need.
pub struct Device {
    pub ordinal: usize,
    pub(crate) ctx: Arc<CudaContext>,
    functions: HashMap<&'static str, (Function, &'static str)>,
    pub arch: String,
    pub sm_count: u32,
    /// Largest dynamic shared memory a block may use (after opting in).
    pub max_smem: u32,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    pub compile_ms: f64,
    pub load_ms: f64,
    pub nvrtc_path: String,
    pub nvrtc_version: (i32, i32),
}

impl Device {
    /// The properties the launch plans read.
    pub fn props(&self) -> super::DeviceProps {
        super::DeviceProps {
            max_smem: self.max_smem as usize,
            sm_count: self.sm_count as usize,
            compute_capability: self.compute_capability,
        }
    }

    pub(crate) fn function(&self, name: &str) -> Result<(Function, &'static str)> {
        self.functions
            .get(name)
            .copied()
            .ok_or_else(|| Error::Cuda(format!("kernel {name} is missing from the module")))
    }

    fn attribute(ctx: &CudaContext, a: CUdevice_attribute) -> Result<i32> {
        ctx.attribute(a)
            .map_err(|e| cuda_err("cuDeviceGetAttribute", e))
    }

    fn open(ordinal: usize) -> Result<Device> {
        driver()?;
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::Device(format!(
                "CUDA device {ordinal} does not exist ({count} visible)"
            )));
        }
        let ctx =
            CudaContext::new(ordinal).map_err(|e| cuda_err("retaining the primary context", e))?;
        let major = Self::attribute(
            &ctx,
            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
        )?;
        let minor = Self::attribute(
            &ctx,
            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
        )?;
        let sm_count = Self::attribute(
            &ctx,
            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )?;
        let max_smem = Self::attribute(
            &ctx,
            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
        )?;
        let arch = format!("sm_{major}{minor}");

        let lib = nvrtc::library()?;
        let t0 = Instant::now();
        // INV_CONV_LINEINFO=1 keeps source lines in the cubin, for profilers (ncu's source view).
        let lineinfo: &[&str] = if std::env::var_os("INV_CONV_LINEINFO").is_some() {
            &["--generate-line-info"]
        } else {
            &[]
        };
        let (cubin, _log) =
            lib.compile(&kernels::program_source(), "inv_conv.cu", &arch, lineinfo)?;
        let compile_ms = t0.elapsed().as_secs_f64() * 1e3;

        let t1 = Instant::now();
        ctx.bind_to_thread()
            .map_err(|e| cuda_err("cuCtxSetCurrent", e))?;
        let module = unsafe { result::module::load_data(cubin.as_ptr() as *const c_void) }
            .map_err(|e| cuda_err("cuModuleLoadData", e))?;
        let mut functions = HashMap::new();
        for (name, signature) in kernels::ENTRY_POINTS {
            let cname = CString::new(name).unwrap();
            let f = unsafe { result::module::get_function(module, cname) }
                .map_err(|e| cuda_err(&format!("cuModuleGetFunction({name})"), e))?;
            // Let every kernel use the device's full shared memory, less its static part; each
            // launch asks for what its plan needs.
            let static_smem = unsafe {
                result::function::get_function_attribute(
                    f,
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
                )
            }
            .map_err(|e| cuda_err(&format!("cuFuncGetAttribute({name})"), e))?;
            unsafe {
                result::function::set_function_attribute(
                    f,
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    (max_smem - static_smem).max(0),
                )
            }
            .map_err(|e| cuda_err(&format!("cuFuncSetAttribute({name})"), e))?;
            functions.insert(name, (Function(f), signature));
        }
        let load_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(Device {
            ordinal,
            ctx,
            functions,
            arch,
            sm_count: sm_count.max(1) as u32,
            max_smem: max_smem.max(0) as u32,
            compute_capability: (major.max(0) as u32, minor.max(0) as u32),
            compile_ms,
            load_ms,
            nvrtc_path: lib.path.clone(),
            nvrtc_version: lib.version,
        })
    }
}

/// The device's state, compiling and loading the kernels at first use (once per device).
pub fn device(ordinal: usize) -> Result<Arc<Device>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<Device>>>> = OnceLock::new();
    let map = DEVICES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = map.get(&ordinal) {
        return Ok(d.clone());
    }
    let d = Arc::new(guarded("opening the device", || Device::open(ordinal))?);
    map.insert(ordinal, d.clone());
    Ok(d)
}

/// Kernel arguments: each one stored in an 8-byte slot (a pointer, an i64, an f64, or an i32 in the
/// slot's low bytes — little-endian targets only, which is every CUDA host), with its type
/// letter (as in [`kernels::ENTRY_POINTS`]) so that a launch can check the list.
#[derive(Default)]
pub(crate) struct Args {
    slots: Vec<u64>,
    kinds: String,
}

impl Args {
    fn push(mut self, slot: u64, kind: char) -> Self {
        self.slots.push(slot);
        self.kinds.push(kind);
        self
    }
    pub fn ptr(self, p: u64) -> Self {
        self.push(p, 'p')
    }
    pub fn int(self, v: i32) -> Self {
        self.push(v as u32 as u64, 'i')
    }
    pub fn long(self, v: i64) -> Self {
        self.push(v as u64, 'l')
    }
    pub fn double(self, v: f64) -> Self {
        self.push(v.to_bits(), 'd')
    }
    /// `int` for each value, in order.
    pub fn ints(self, values: &[i32]) -> Self {
        values.iter().fold(self, |args, &v| args.int(v))
    }
}

/// Launches `name` on `stream` (a raw CUstream handle owned by the caller).
pub(crate) fn launch(
    dev: &Device,
    name: &str,
    grid: (u32, u32, u32),
    block: u32,
    smem: u32,
    stream: u64,
    args: Args,
) -> Result<()> {
    launch_with(dev, name, grid, block, smem, stream, args, false)
}

/// [`launch`]; `programmatic` (compute capability 9.0 and up) lets the launch start while the
/// one before it on the stream still runs (programmatic dependent launch): its kernel must
/// wait (`griddepcontrol.wait`) before it touches anything that launch writes, and whatever
/// it reads before may have been written only by work that finished before that launch began.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch_with(
    dev: &Device,
    name: &str,
    grid: (u32, u32, u32),
    block: u32,
    smem: u32,
    stream: u64,
    args: Args,
    programmatic: bool,
) -> Result<()> {
    let (f, signature) = dev.function(name)?;
    if args.kinds != signature {
        return Err(Error::Cuda(format!(
            "internal error: {name} takes arguments ({signature}), the launch passed ({})",
            args.kinds
        )));
    }
    if grid.0 == 0
        || grid.1 == 0
        || grid.2 == 0
        || grid.0 > i32::MAX as u32
        || grid.1 > 65535
        || grid.2 > 65535
    {
        return Err(Error::TooLarge(format!(
            "{name}: the launch grid {grid:?} is out of range for this problem size"
        )));
    }
    if smem > dev.max_smem {
        return Err(Error::TooLarge(format!(
            "{name} needs {smem} bytes of shared memory; the device allows {}",
            dev.max_smem
        )));
    }
    let mut slots = args.slots;
    let mut params: Vec<*mut c_void> = slots
        .iter_mut()
        .map(|s| s as *mut u64 as *mut c_void)
        .collect();
    guarded(name, || {
        dev.ctx
            .bind_to_thread()
            .map_err(|e| cuda_err("cuCtxSetCurrent", e))?;
        if !programmatic {
            return unsafe {
                result::launch_kernel(
                    f.0,
                    grid,
                    (block, 1, 1),
                    smem,
                    stream as sys::CUstream,
                    &mut params,
                )
            }
            .map_err(|e| cuda_err(&format!("launching {name}"), e));
        }
        // SAFETY: a plain-data C struct; all-zero is a valid value, the fields set below.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: grid.0,
            gridDimY: grid.1,
            gridDimZ: grid.2,
            blockDimX: block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: smem,
            hStream: stream as sys::CUstream,
            attrs: &mut attr,
            numAttrs: 1,
        };
        unsafe { sys::cuLaunchKernelEx(&config, f.0, params.as_mut_ptr(), std::ptr::null_mut()) }
            .result()
            .map_err(|e| cuda_err(&format!("launching {name} (programmatic)"), e))
    })
}
