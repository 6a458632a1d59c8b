//! Starting and supervising the ranks of a data-parallel job.
//!
//! `ldmkit train --gpus N ...` becomes a launcher: it creates the NCCL id (or fetches it
//! from node 0 in a multi-node job), starts N copies of the same command line, each with one
//! GPU visible and its rank in the environment, and watches them. When one fails, the others
//! are stopped (SIGTERM, then SIGKILL) and the job exits non-zero naming the rank — NCCL
//! would otherwise leave them waiting for it forever. Ctrl-C reaches every rank (the
//! terminal signals the whole process group); they agree to stop after the same step.
//!
//! Rendezvous between nodes: `tcp:HOST:PORT` (node 0's launcher serves the id there for the
//! whole job) or `file:PATH` on a filesystem every node sees (written atomically by node 0).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

pub const ENV_RANK: &str = "LDMKIT_RANK";
pub const ENV_WORLD: &str = "LDMKIT_WORLD_SIZE";
pub const ENV_LOCAL_RANK: &str = "LDMKIT_LOCAL_RANK";
pub const ENV_NCCL_ID: &str = "LDMKIT_NCCL_ID";
/// How long a node waits for node 0's id.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a stopped rank gets to exit before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// What a rank process learns from its launcher.
#[derive(Clone, Debug)]
pub struct RankEnv {
    pub rank: usize,
    pub world: usize,
    pub nccl_id: String,
}

impl RankEnv {
    /// This process's rank, when a launcher started it.
    pub fn from_env() -> Option<Result<RankEnv, String>> {
        let rank = std::env::var(ENV_RANK).ok()?;
        let num = |name: &str, v: Option<String>| -> Result<usize, String> {
            v.ok_or(format!("{name} is not set"))?
                .parse()
                .map_err(|_| format!("{name} is not a number"))
        };
        Some((|| {
            Ok(RankEnv {
                rank: num(ENV_RANK, Some(rank))?,
                world: num(ENV_WORLD, std::env::var(ENV_WORLD).ok())?,
                nccl_id: std::env::var(ENV_NCCL_ID)
                    .map_err(|_| format!("{ENV_NCCL_ID} is not set"))?,
            })
        })())
    }
}

/// Where the nodes of a job meet.
#[derive(Clone, Debug, PartialEq)]
pub enum Rendezvous {
    Tcp(String),
    File(PathBuf),
}

impl Rendezvous {
    pub fn parse(s: &str) -> Result<Rendezvous, String> {
        if let Some(addr) = s.strip_prefix("tcp:") {
            if addr
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err(format!("--rendezvous {s}: expected tcp:HOST:PORT"));
            }
            Ok(Rendezvous::Tcp(addr.to_string()))
        } else if let Some(path) = s.strip_prefix("file:") {
            Ok(Rendezvous::File(PathBuf::from(path)))
        } else {
            Err(format!(
                "--rendezvous {s}: expected tcp:HOST:PORT or file:PATH"
            ))
        }
    }

    /// Node 0: make `id` available to the other nodes (a TCP listener serves it from a
    /// background thread for the launcher's lifetime).
    pub fn publish(&self, id: &str) -> Result<(), String> {
        match self {
            Rendezvous::File(path) => write_atomically(path, id),
            Rendezvous::Tcp(addr) => {
                let listener = std::net::TcpListener::bind(addr)
                    .map_err(|e| format!("rendezvous tcp:{addr}: cannot listen: {e}"))?;
                let line = format!("{id}\n");
                std::thread::spawn(move || {
                    for mut peer in listener.incoming().flatten() {
                        let _ = peer.write_all(line.as_bytes());
                    }
                });
                Ok(())
            }
        }
    }

    /// Other nodes: wait for node 0's id.
    pub fn fetch(&self, timeout: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            let got = match self {
                Rendezvous::File(path) => std::fs::read_to_string(path).ok(),
                Rendezvous::Tcp(addr) => std::net::TcpStream::connect(addr).ok().and_then(|s| {
                    let mut line = String::new();
                    BufReader::new(s).read_line(&mut line).ok().map(|_| line)
                }),
            };
            if let Some(id) = got.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
                return Ok(id);
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "rendezvous {self:?}: no NCCL id from node 0 after {} s (is node 0 running with the same --rendezvous?)",
                    timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The job as this node sees it.
#[derive(Clone, Debug)]
pub struct Plan {
    /// GPUs (ranks) on this node.
    pub gpus: usize,
    pub nodes: usize,
    pub node_rank: usize,
    pub rendezvous: Option<Rendezvous>,
}

impl Plan {
    pub fn check(&self) -> Result<(), String> {
        if self.gpus == 0 {
            return Err("--gpus must be at least 1".into());
        }
        if self.node_rank >= self.nodes {
            return Err(format!(
                "--node-rank {} is not below --nodes {}",
                self.node_rank, self.nodes
            ));
        }
        if self.nodes > 1 && self.rendezvous.is_none() {
            return Err("a multi-node job needs --rendezvous tcp:HOST:PORT or file:PATH".into());
        }
        Ok(())
    }

    pub fn world(&self) -> usize {
        self.gpus * self.nodes
    }

    /// The NCCL id of the job: made here on node 0 (and published), fetched elsewhere.
    pub fn nccl_id(&self, make: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
        match (&self.rendezvous, self.node_rank) {
            (None, _) => make(),
            (Some(r), 0) => {
                let id = make()?;
                r.publish(&id)?;
                Ok(id)
            }
            (Some(r), _) => r.fetch(RENDEZVOUS_TIMEOUT),
        }
    }

    /// Start this node's ranks: `command` run once per local GPU with the rank's environment
    /// and only that GPU visible. `visible` is the job's CUDA_VISIBLE_DEVICES, if it has one:
    /// local rank i then takes its i-th entry.
    pub fn spawn(
        &self,
        command: &[std::ffi::OsString],
        nccl_id: &str,
        visible: Option<&str>,
    ) -> Result<Vec<Rank>, String> {
        let (program, args) = command.split_first().ok_or("no command to start")?;
        let visible: Vec<String> = visible
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_else(|| (0..self.gpus).map(|i| i.to_string()).collect());
        if visible.len() < self.gpus {
            return Err(format!(
                "--gpus {} but CUDA_VISIBLE_DEVICES lists {}",
                self.gpus,
                visible.len()
            ));
        }
        let mut ranks: Vec<Rank> = Vec::new();
        for (local, gpu) in visible.iter().take(self.gpus).enumerate() {
            let rank = self.node_rank * self.gpus + local;
            let mut cmd = Command::new(program);
            // Ranks get a process group of their own, so a terminal's Ctrl-C (or a SIGTERM or
            // SIGHUP to the launcher) reaches each rank once, forwarded by the launcher
            // ([`supervise`]): a rank that sees two signals stops without saving.
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let child = cmd
                .args(args)
                .env(ENV_RANK, rank.to_string())
                .env(ENV_WORLD, self.world().to_string())
                .env(ENV_LOCAL_RANK, local.to_string())
                .env(ENV_NCCL_ID, nccl_id)
                .env("CUDA_VISIBLE_DEVICES", gpu)
                .spawn();
            match child {
                Ok(child) => ranks.push(Rank {
                    rank,
                    gpu: visible[local].clone(),
                    child,
                }),
                Err(e) => {
                    stop(&mut ranks);
                    return Err(format!("cannot start rank {rank}: {e}"));
                }
            }
        }
        Ok(ranks)
    }
}

/// One running rank process.
pub struct Rank {
    pub rank: usize,
    pub gpu: String,
    pub child: Child,
}

/// Exit codes a rank ends with when the job was interrupted (Ctrl-C: saved and stopped).
const EXIT_CANCELLED: i32 = 130;

/// Wait for every rank. The first failure stops the rest; returns the job's exit code
/// (0, 130 when the ranks were interrupted) or the failure's message.
pub fn supervise(mut ranks: Vec<Rank>) -> Result<u8, String> {
    let mut done: Vec<Option<ExitStatus>> = vec![None; ranks.len()];
    let mut forwarded = false;
    loop {
        if !forwarded && STOP_REQUESTED.load(std::sync::atomic::Ordering::SeqCst) {
            // One SIGTERM each: the ranks save a checkpoint and stop, as on Ctrl-C.
            forwarded = true;
            #[cfg(unix)]
            for (r, d) in ranks.iter().zip(&done) {
                if d.is_none() {
                    unsafe {
                        libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM);
                    }
                }
            }
        }
        for (i, r) in ranks.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let Some(status) = r
                .child
                .try_wait()
                .map_err(|e| format!("rank {}: {e}", r.rank))?
            else {
                continue;
            };
            done[i] = Some(status);
            if !status.success() && status.code() != Some(EXIT_CANCELLED) {
                let (rank, gpu) = (r.rank, r.gpu.clone());
                stop(&mut ranks);
                return Err(format!(
                    "rank {rank} (GPU {gpu}) {}: stopped the other ranks",
                    describe(status)
                ));
            }
        }
        if done.iter().all(Option::is_some) {
            let cancelled = done
                .iter()
                .flatten()
                .any(|s| s.code() == Some(EXIT_CANCELLED));
            return Ok(if cancelled { EXIT_CANCELLED as u8 } else { 0 });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("was killed by signal {sig}");
        }
    }
    match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => "ended".into(),
    }
}

/// Set by the launcher's signal handler (Ctrl-C, SIGTERM, SIGHUP); [`supervise`] passes it on.
pub static STOP_REQUESTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Ask every still-running rank to stop, then kill those that do not within [`GRACE`].
fn stop(ranks: &mut [Rank]) {
    #[cfg(unix)]
    for r in ranks.iter() {
        unsafe {
            libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let start = Instant::now();
    for r in ranks.iter_mut() {
        while matches!(r.child.try_wait(), Ok(None)) && start.elapsed() < GRACE {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(rank: usize, script: &str) -> Rank {
        Rank {
            rank,
            gpu: rank.to_string(),
            child: Command::new("sh").args(["-c", script]).spawn().unwrap(),
        }
    }

    #[test]
    fn a_failing_rank_stops_the_others_and_is_named() {
        let start = Instant::now();
        let ranks = vec![
            sh(0, "sleep 60"),
            sh(1, "sleep 0.2; exit 3"),
            sh(2, "sleep 60"),
        ];
        let err = supervise(ranks).unwrap_err();
        assert_eq!(
            err,
            "rank 1 (GPU 1) exited with status 3: stopped the other ranks"
        );
        // The sleepers were stopped, not waited for.
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_killed_rank_is_reported_as_such() {
        let ranks = vec![sh(0, "kill -9 $$"), sh(1, "sleep 60")];
        let err = supervise(ranks).unwrap_err();
        assert!(
            err.starts_with("rank 0 (GPU 0) was killed by signal 9"),
            "{err}"
        );
    }

    #[test]
    fn the_job_ends_with_its_ranks() {
        assert_eq!(
            supervise(vec![sh(0, "exit 0"), sh(1, "sleep 0.3")]).unwrap(),
            0
        );
        assert_eq!(
            supervise(vec![sh(0, "exit 130"), sh(1, "exit 130")]).unwrap(),
            130
        );
    }

    #[test]
    fn ranks_get_their_environment_and_one_gpu_each() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let script = format!(
            "echo $LDMKIT_RANK $LDMKIT_WORLD_SIZE $LDMKIT_LOCAL_RANK $CUDA_VISIBLE_DEVICES $LDMKIT_NCCL_ID >> {}",
            out.display()
        );
        let plan = Plan {
            gpus: 2,
            nodes: 3,
            node_rank: 1,
            rendezvous: None,
        };
        let command: Vec<std::ffi::OsString> =
            ["sh", "-c", &script].iter().map(Into::into).collect();
        assert_eq!(
            supervise(plan.spawn(&command, "abcd", None).unwrap()).unwrap(),
            0
        );
        let mut lines: Vec<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        assert_eq!(lines, ["2 6 0 0 abcd", "3 6 1 1 abcd"]);
        // A job given GPUs 5 and 7 hands them out in order; too few is refused.
        std::fs::remove_file(&out).unwrap();
        assert_eq!(
            supervise(plan.spawn(&command, "ab", Some("5, 7")).unwrap()).unwrap(),
            0
        );
        let mut lines: Vec<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        assert_eq!(lines, ["2 6 0 5 ab", "3 6 1 7 ab"]);
        assert!(plan.spawn(&command, "ab", Some("5")).is_err());
    }

    #[test]
    fn nodes_meet_through_a_file_or_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let file = Rendezvous::parse(&format!("file:{}", dir.path().join("id").display())).unwrap();
        let waiter = {
            let file = file.clone();
            std::thread::spawn(move || file.fetch(Duration::from_secs(20)))
        };
        std::thread::sleep(Duration::from_millis(300));
        file.publish("00ff").unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), "00ff");

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tcp = Rendezvous::parse(&format!("tcp:127.0.0.1:{port}")).unwrap();
        tcp.publish("beef").unwrap();
        assert_eq!(tcp.fetch(Duration::from_secs(20)).unwrap(), "beef");
        assert_eq!(tcp.fetch(Duration::from_secs(20)).unwrap(), "beef");

        let nobody = Rendezvous::File(dir.path().join("never"));
        assert!(nobody
            .fetch(Duration::from_millis(600))
            .unwrap_err()
            .contains("no NCCL id"));
        assert!(Rendezvous::parse("tcp:host").is_err());
        assert!(Rendezvous::parse("host:1").is_err());
    }

    #[test]
    fn plans_are_checked() {
        let plan = |gpus, nodes, node_rank, r: Option<Rendezvous>| Plan {
            gpus,
            nodes,
            node_rank,
            rendezvous: r,
        };
        assert!(plan(0, 1, 0, None).check().is_err());
        assert!(plan(2, 2, 2, None).check().is_err());
        assert!(plan(2, 2, 1, None)
            .check()
            .unwrap_err()
            .contains("--rendezvous"));
        assert!(plan(2, 2, 1, Some(Rendezvous::Tcp("h:1".into())))
            .check()
            .is_ok());
        assert_eq!(plan(4, 2, 1, None).world(), 8);
    }
}
