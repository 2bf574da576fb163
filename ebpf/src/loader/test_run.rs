//! Running the programs on crafted packets with `BPF_PROG_TEST_RUN`, for
//! datapath tests and benchmarks.

use std::time::Duration;

use aya::{
    Ebpf,
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions},
};

use super::{Datapath, LoadError, Program};

pub(super) const FLOOR: &str = "weir_floor";

/// The outcome of [`Datapath::test_run`] or [`Floor::test_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The TC action the program returned (`TC_ACT_UNSPEC` is -1).
    pub action: i32,
    /// Mean time of one run, as measured by the kernel.
    pub duration: Duration,
}

/// Why `BPF_PROG_TEST_RUN` failed.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    /// The kernel refused the run (e.g. a packet shorter than 14 bytes).
    #[error("running {program} with BPF_PROG_TEST_RUN")]
    Run {
        /// The program's name.
        program: &'static str,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
}

fn run(
    classifier: &SchedClassifier,
    program: &'static str,
    packet: &[u8],
    repeat: u32,
) -> Result<TestRunOutput, TestRunError> {
    let opts = TestRunOptions {
        data_in: Some(packet),
        repeat,
        ..TestRunOptions::default()
    };
    let result = classifier
        .test_run(opts)
        .map_err(|source| TestRunError::Run { program, source })?;
    Ok(TestRunOutput {
        // TC actions are ints; the syscall returns the program's u32 register.
        action: result.return_value.cast_signed(),
        duration: result.duration,
    })
}

impl Datapath {
    /// Runs `program` `repeat` times on `packet` (an Ethernet frame, at
    /// least 14 bytes). The maps see every run, as with real traffic; the
    /// flow key's ifindex is the test-run device's (loopback of the calling
    /// thread's network namespace).
    ///
    /// # Errors
    ///
    /// [`TestRunError::Run`] if the kernel refused the run.
    pub fn test_run(
        &self,
        program: Program,
        packet: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutput, TestRunError> {
        run(self.classifier(program), program.name(), packet, repeat)
    }
}

/// The floor program `weir_floor`: returns `TC_ACT_OK` and nothing else, so
/// benchmarks can report the observe programs' cost relative to entering any
/// TC program.
#[derive(Debug)]
pub struct Floor {
    ebpf: Ebpf,
}

impl Floor {
    /// Loads the floor program.
    ///
    /// # Errors
    ///
    /// See [`LoadError`].
    pub fn load() -> Result<Self, LoadError> {
        Ok(Self {
            ebpf: super::load_floor()?,
        })
    }

    /// Runs the floor program `repeat` times on `packet`.
    ///
    /// # Errors
    ///
    /// [`TestRunError::Run`] if the kernel refused the run.
    pub fn test_run(&self, packet: &[u8], repeat: u32) -> Result<TestRunOutput, TestRunError> {
        let classifier: &SchedClassifier = self
            .ebpf
            .program(FLOOR)
            .and_then(|p| p.try_into().ok())
            .expect("weir_floor is checked in Floor::load");
        run(classifier, FLOOR, packet, repeat)
    }
}
