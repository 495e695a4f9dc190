//! Config durations at and around their limits, through the real binary (issue 16): every value
//! is judged alike by `--config.check`, by a start and by a SIGHUP reload. A refused value is
//! refused with its field named (the check exits 1, a start 78, a running exporter keeps its
//! config, stays healthy and says `rtc_exporter_config_last_reload_successful 0`); an accepted
//! one, at the limit too, starts, reloads and renders (the interval it sets, a 7-day class in
//! session); nothing panics. `classes[].duration: 100000000d` once passed the check and then
//! panicked on every render, and a duration summing past the maximum panicked the check.
//!
//! The limits, in milliseconds: `interval` (global and a target's) 100ms to 24h,
//! `poll_timeout` and `request_timeout` 100ms to 1h, `classes[].duration` 1s to 7d, a TRTC
//! target's `delay` 0 to 1h. Whether a value is accepted is decided here from its terms (plain
//! sums, no parser), so the binary is checked against arithmetic, not against itself.
//!
//! The targets poll the built-in Talk-cloud and TRTC simulators on loopback. The property test
//! draws configs (16 cases, each starting the binary; `PROPTEST_CASES` to change); the table
//! test runs every limit exactly and the named hostile values.

mod common;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, try_scrape, value, wait_for};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use rtc_exporter::sim::SimServer;

const MS: u128 = 1;
const SECOND: u128 = 1_000;
const MINUTE: u128 = 60 * SECOND;
const HOUR: u128 = 60 * MINUTE;
const DAY: u128 = 24 * HOUR;

/// The duration fields of the config the tests write.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Field {
    GlobalInterval,
    PollTimeout,
    RequestTimeout,
    TargetInterval,
    ClassDuration,
    Delay,
}

const FIELDS: [Field; 6] = [
    Field::GlobalInterval,
    Field::PollTimeout,
    Field::RequestTimeout,
    Field::TargetInterval,
    Field::ClassDuration,
    Field::Delay,
];

impl Field {
    /// The least and the most accepted, in milliseconds, both included.
    fn limits(self) -> (u128, u128) {
        match self {
            Field::GlobalInterval | Field::TargetInterval => (100 * MS, DAY),
            Field::PollTimeout | Field::RequestTimeout => (100 * MS, HOUR),
            Field::ClassDuration => (SECOND, 7 * DAY),
            Field::Delay => (0, HOUR),
        }
    }

    /// How an error names the field (`--config.check`, a start and a reload alike).
    fn named(self) -> &'static str {
        match self {
            Field::GlobalInterval => "global.interval: ",
            Field::PollTimeout => "global.poll_timeout: ",
            Field::RequestTimeout => "global.request_timeout: ",
            Field::TargetInterval => "targets[0] (talk): interval: ",
            Field::ClassDuration => "targets[0] (talk): classes[0].duration: ",
            Field::Delay => "targets[1] (trtc): delay: ",
        }
    }

    /// Its value in the base config, the one the running exporter reloads back to.
    fn base(self) -> &'static str {
        match self {
            Field::GlobalInterval | Field::TargetInterval => "\"1s\"",
            Field::PollTimeout => "\"20s\"",
            Field::RequestTimeout => "\"5s\"",
            Field::ClassDuration => "\"45m\"",
            Field::Delay => "\"60s\"",
        }
    }
}

/// A value written for a field: YAML, and the milliseconds its terms add up to (`None`: not a
/// duration at all, such as `-1s` or a bare number).
#[derive(Clone, Debug)]
struct Value {
    yaml: String,
    ms: Option<u128>,
}

impl Value {
    fn accepted(&self, field: Field) -> bool {
        let (lo, hi) = field.limits();
        self.ms.is_some_and(|t| lo <= t && t <= hi)
    }
}

/// `t` milliseconds written as terms in one of several ways.
fn spell(t: u128, style: usize) -> Value {
    let text = match style % 4 {
        // One term: `86400000ms`.
        0 => format!("{t}ms"),
        // A sum across units: `86399s1000ms`.
        2 if t >= SECOND => {
            let r = t % SECOND + SECOND;
            format!("{}s{r}ms", (t - r) / SECOND)
        }
        // Two halves of one unit: `43200000ms43200000ms`.
        3 if t > 0 => format!("{}ms{}ms", t / 2, t - t / 2),
        // Largest units first: `1d23h59m59s999ms`.
        _ => {
            let mut rest = t;
            let mut text = String::new();
            for (unit, size) in [
                ("d", DAY),
                ("h", HOUR),
                ("m", MINUTE),
                ("s", SECOND),
                ("ms", MS),
            ] {
                if rest >= size {
                    text.push_str(&format!("{}{unit}", rest / size));
                    rest %= size;
                }
            }
            if text.is_empty() {
                text.push_str("0s");
            }
            text
        }
    };
    terms(&text, t)
}

fn terms(text: &str, ms: u128) -> Value {
    Value {
        yaml: format!("\"{text}\""),
        ms: Some(ms),
    }
}

/// Not a duration, whatever the field.
const MALFORMED: &[&str] = &[
    "\"-1s\"",
    "\"-24h\"",
    "\"1h-1s\"",
    "\"1.5h\"",
    "\"24 h\"",
    "\"\"",
    "\"1w\"",
    "\"PT24H\"",
    "-1",
    "0",
    "86400",
];

/// Sums past the maximum that once panicked, and past what `i64` milliseconds and `u64`
/// milliseconds hold.
fn far_past() -> Vec<u128> {
    vec![
        100_000_000 * DAY,
        i64::MAX as u128 + 1,
        u64::MAX as u128 + 1,
        2 * u64::MAX as u128,
    ]
}

fn valid_totals(f: Field) -> Vec<u128> {
    let (lo, hi) = f.limits();
    vec![hi, lo, hi - 1, lo + 1, (lo + hi) / 2]
}

fn invalid_totals(f: Field) -> Vec<u128> {
    let (lo, hi) = f.limits();
    let mut v = vec![hi + 1, hi + SECOND, 2 * hi - 1];
    v.extend(far_past());
    if lo > 0 {
        v.extend([lo - 1, 0]);
    }
    v
}

/// One config to try: a value for some of the fields, the base value for the others.
type Case = Vec<Option<Value>>;

fn refused(case: &Case) -> Vec<Field> {
    FIELDS
        .iter()
        .zip(case)
        .filter_map(|(f, v)| v.as_ref().filter(|v| !v.accepted(*f)).map(|_| *f))
        .collect()
}

/// The simulators and what a target needs to reach them.
struct Sims {
    _servers: Vec<SimServer>,
    talk: String,
    trtc: String,
}

impl Sims {
    async fn start() -> Sims {
        let mut servers = Vec::new();
        let mut parts = Vec::new();
        for (seed, vendor) in [(31, "talkcloud"), (32, "tencent_trtc")] {
            let entry = rtc_exporter::clouds::lookup(vendor).unwrap();
            let s = SimServer::start(
                rtc_exporter::simulate::simulator(entry.name, seed).unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            )
            .await
            .unwrap();
            let demo = s.sim.demo_target(&s.endpoint);
            let json = |key: &str| serde_json::to_string(&demo[key]).unwrap();
            parts.push(match vendor {
                "talkcloud" => format!(
                    "    endpoint: {}\n    credentials: {}\n    rooms: [{}]\n",
                    s.endpoint,
                    json("credentials"),
                    serde_json::to_string(&demo["rooms"][0]).unwrap()
                ),
                _ => format!(
                    "    endpoint: {}\n    credentials: {}\n    sdk_app_id: {}\n    region: {}\n",
                    s.endpoint,
                    json("credentials"),
                    json("sdk_app_id"),
                    json("region")
                ),
            });
            servers.push(s);
        }
        Sims {
            _servers: servers,
            trtc: parts.pop().unwrap(),
            talk: parts.pop().unwrap(),
        }
    }

    /// The config of a case: Talk-cloud `talk` polls on its own interval and has a class in a
    /// room named `in-class` that starts every second (so it is in session at any time for
    /// any duration it accepts); TRTC `trtc` polls on the global interval.
    fn config(&self, case: &Case) -> String {
        let v = |f: Field| {
            let i = FIELDS.iter().position(|x| *x == f).unwrap();
            case[i]
                .as_ref()
                .map_or(f.base().to_string(), |v| v.yaml.clone())
        };
        format!(
            "global:\n  timezone: UTC\n  interval: {}\n  poll_timeout: {}\n  request_timeout: {}\n  stale_after: 3\n\
             targets:\n  - name: talk\n    vendor: talkcloud\n    interval: {}\n{}    classes:\n      - {{ rooms: [in-class], schedule: \"* * * * * *\", duration: {} }}\n\
             \x20 - name: trtc\n    vendor: tencent_trtc\n    delay: {}\n{}",
            v(Field::GlobalInterval),
            v(Field::PollTimeout),
            v(Field::RequestTimeout),
            v(Field::TargetInterval),
            self.talk,
            v(Field::ClassDuration),
            v(Field::Delay),
            self.trtc,
        )
    }
}

fn exporter() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"));
    c.env_remove("CREDENTIALS_DIRECTORY");
    c
}

/// Writes `text` to `path` whole (a temporary file, then a rename), as an operator's tools do.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn no_panic(what: &str, code: Option<i32>, stderr: &str, config: &str) {
    assert!(
        code != Some(101) && !stderr.contains("panicked"),
        "{what}: a panic (exit {code:?})\n{stderr}\n---\n{config}"
    );
}

/// Every refused field is named in `errors` and no other field is.
fn names_exactly(what: &str, errors: &str, refused: &[Field], config: &str) {
    for f in FIELDS {
        let named = errors.contains(f.named());
        assert_eq!(
            named,
            refused.contains(&f),
            "{what}: {:?} {} named\n{errors}\n---\n{config}",
            f,
            if named { "is" } else { "is not" }
        );
    }
}

/// `--config.check`: 0 and `OK` for an accepted config; 1 and one line per refused field,
/// each named, for a refused one.
fn check(file: &Path, case: &Case, config: &str) {
    let out = exporter()
        .arg("--config.check")
        .arg(format!("--config.file={}", file.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    no_panic("--config.check", out.status.code(), &stderr, config);
    let refused = refused(case);
    if refused.is_empty() {
        assert_eq!(
            out.status.code(),
            Some(0),
            "--config.check refused an accepted config:\n{stderr}\n---\n{config}"
        );
        assert!(stdout.contains("OK, 2 target(s)"), "{stdout}");
    } else {
        assert_eq!(
            out.status.code(),
            Some(1),
            "--config.check: {stdout}{stderr}\n---\n{config}"
        );
        names_exactly("--config.check", &stderr, &refused, config);
        let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(lines, refused.len(), "one line per error:\n{stderr}");
    }
}

/// Collects a child's stderr as it is written; the thread ends when the child closes it.
fn collect(child: &mut Child) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    (log, reader)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let sent = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits for the child to exit, at most `timeout`.
async fn exit_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn seconds(ms: u128) -> f64 {
    ms as f64 / 1000.0
}

/// What an accepted config shows once it runs: each target's interval, the class in session.
fn shows(text: &str, case: &Case) -> Result<(), String> {
    let ms = |f: Field| {
        let i = FIELDS.iter().position(|x| *x == f).unwrap();
        case[i].as_ref().and_then(|v| v.ms).unwrap_or(SECOND)
    };
    for (target, want) in [
        ("talk", seconds(ms(Field::TargetInterval))),
        ("trtc", seconds(ms(Field::GlobalInterval))),
    ] {
        let got = value(
            text,
            "rtc_exporter_target_interval_seconds",
            &[("target", target)],
        );
        if got.is_none_or(|g| (g - want).abs() > 1e-6) {
            return Err(format!("{target}: interval {got:?}, want {want}"));
        }
    }
    let class = value(
        text,
        "rtc_room_class_scheduled",
        &[("target", "talk"), ("room", "in-class")],
    );
    if class != Some(1.0) {
        return Err(format!("the class in session: {class:?}"));
    }
    Ok(())
}

/// A start with the config: a refused one exits 78 before it serves, naming each refused
/// field; an accepted one serves, polls every target, shows its values and stops with 0.
async fn start(file: &Path, case: &Case, config: &str) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = KillOnDrop(
        exporter()
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (log, reader) = collect(&mut child.0);
    let refused = refused(case);
    if !refused.is_empty() {
        let status = exit_within(&mut child.0, Duration::from_secs(20)).await;
        let Some(status) = status else {
            let stderr = log.lock().unwrap().clone();
            panic!("a refused config started:\n{stderr}\n---\n{config}");
        };
        reader.join().unwrap();
        let stderr = log.lock().unwrap().clone();
        no_panic("start", status.code(), &stderr, config);
        assert_eq!(status.code(), Some(78), "start: {stderr}\n---\n{config}");
        names_exactly("start", &stderr, &refused, config);
        return;
    }
    let text = wait_for(
        "the exporter up with every target polled",
        Duration::from_secs(30),
        || {
            let base = base.clone();
            async move {
                let ready = reqwest::get(format!("{base}/-/ready")).await.ok()?;
                if ready.status() != 200 {
                    return None;
                }
                try_scrape(&base).await
            }
        },
    )
    .await;
    if let Err(e) = shows(&text, case) {
        panic!("start: {e}\n---\n{config}");
    }
    assert_eq!(common::get(&base, "/-/healthy").await.0, 200);
    signal(&child.0, "-TERM");
    let status = exit_within(&mut child.0, Duration::from_secs(20))
        .await
        .expect("stops on SIGTERM");
    reader.join().unwrap();
    let stderr = log.lock().unwrap().clone();
    no_panic("start", status.code(), &stderr, config);
    assert!(status.success(), "SIGTERM: {status:?}\n{stderr}");
}

/// One exporter that runs the base config and is sent every case by SIGHUP.
struct Daemon {
    child: KillOnDrop,
    log: Arc<Mutex<String>>,
    base: String,
    file: PathBuf,
    base_config: String,
}

impl Daemon {
    async fn start(dir: &Path, base_config: String) -> Daemon {
        let file = dir.join("running.yaml");
        write(&file, &base_config);
        let port = free_port();
        let mut child = KillOnDrop(
            exporter()
                .arg(format!("--config.file={}", file.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (log, _) = collect(&mut child.0);
        let d = Daemon {
            child,
            log,
            base: format!("http://127.0.0.1:{port}"),
            file,
            base_config,
        };
        d.polls_go_on("the base config at start").await;
        d
    }

    fn log_since(&self, mark: usize) -> String {
        self.log.lock().unwrap()[mark..].to_string()
    }

    /// Writes `config`, sends SIGHUP and returns what the exporter logged about it.
    async fn reload(&mut self, config: &str) -> String {
        write(&self.file, config);
        let mark = self.log.lock().unwrap().len();
        signal(&self.child.0, "-HUP");
        wait_for("the reload to be logged", Duration::from_secs(20), || {
            let log = self.log_since(mark);
            let done = log.contains("config reloaded") || log.contains("config not reloaded");
            async move { done.then_some(log) }
        })
        .await
    }

    fn alive(&mut self, config: &str) {
        let exited = self.child.0.try_wait().unwrap();
        let log = self.log.lock().unwrap().clone();
        assert!(
            exited.is_none(),
            "the exporter exited: {exited:?}\n{log}\n---\n{config}"
        );
        no_panic("reload", None, &log, config);
    }

    /// Every target of the running config polls again (its task lives).
    async fn polls_go_on(&self, what: &str) {
        let count = |text: &str, target: &str| {
            ["success", "failure"]
                .iter()
                .filter_map(|r| {
                    value(
                        text,
                        "rtc_exporter_polls_total",
                        &[("target", target), ("result", r)],
                    )
                })
                .sum::<f64>()
        };
        let base = self.base.clone();
        let before = wait_for("the exporter up", Duration::from_secs(30), || {
            let base = base.clone();
            async move { try_scrape(&base).await }
        })
        .await;
        wait_for(
            &format!("every target to poll again ({what})"),
            Duration::from_secs(30),
            || {
                let base = base.clone();
                let before = before.clone();
                async move {
                    let text = try_scrape(&base).await?;
                    ["talk", "trtc"]
                        .iter()
                        .all(|t| count(&text, t) > count(&before, t))
                        .then_some(())
                }
            },
        )
        .await;
    }

    /// The case by SIGHUP: refused, the base config runs on (healthy, its intervals, polls
    /// going on), the reload gauge says 0 and each refused field is logged; accepted, the gauge
    /// says 1 and the values show, then the base config is reloaded and polls go on.
    async fn try_case(&mut self, case: &Case, config: &str) {
        let logged = self.reload(config).await;
        self.alive(config);
        let text = common::scrape(&self.base).await;
        let gauge = value(&text, "rtc_exporter_config_last_reload_successful", &[]);
        assert_eq!(common::get(&self.base, "/-/healthy").await.0, 200);
        let refused = refused(case);
        if refused.is_empty() {
            assert!(
                logged.contains("config reloaded"),
                "reload refused an accepted config:\n{logged}\n---\n{config}"
            );
            assert_eq!(gauge, Some(1.0));
            if let Err(e) = shows(&text, case) {
                panic!("reload: {e}\n---\n{config}");
            }
            let base = self.base_config.clone();
            let back = self.reload(&base).await;
            assert!(back.contains("config reloaded"), "{back}");
            self.alive(&base);
        } else {
            assert!(
                logged.contains("config reload failed; the running config stays"),
                "reload: {logged}\n---\n{config}"
            );
            assert_eq!(gauge, Some(0.0), "reload gauge");
            let errors: String = logged
                .lines()
                .filter(|l| l.contains("config reload failed"))
                .collect::<Vec<_>>()
                .join("\n");
            names_exactly("reload", &errors, &refused, config);
            assert_eq!(errors.lines().count(), refused.len(), "{errors}");
            if let Err(e) = shows(&text, &vec![None; FIELDS.len()]) {
                panic!("the base config does not run on after a refused reload: {e}");
            }
        }
        self.polls_go_on("after the reload").await;
        self.alive(config);
    }
}

/// Runs one case through `--config.check`, a start and a reload.
async fn run_case(sims: &Sims, daemon: &mut Daemon, dir: &Path, case: &Case) {
    let config = sims.config(case);
    let file = dir.join("case.yaml");
    write(&file, &config);
    check(&file, case, &config);
    start(&file, case, &config).await;
    daemon.try_case(case, &config).await;
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtc-durations-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every limit exactly, one past, the sums and the hostile values of the issue, each in every
/// field at once.
#[test]
fn limits_and_hostile_durations_are_judged_alike_by_check_start_and_reload() {
    let started = Instant::now();
    let rt = runtime();
    let dir = temp_dir("table");
    let sims = rt.block_on(Sims::start());
    let base = sims.config(&vec![None; FIELDS.len()]);
    let mut daemon = rt.block_on(Daemon::start(&dir, base));
    let each = |f: &dyn Fn(Field) -> Option<Value>| -> Case { FIELDS.map(f).to_vec() };
    let all = |text: &str, ms: Option<u128>| -> Case {
        let v = Value {
            yaml: text.to_string(),
            ms,
        };
        vec![Some(v); FIELDS.len()]
    };
    let mut cases: Vec<(&str, Case)> = vec![
        ("at the maximum", each(&|f| Some(spell(f.limits().1, 1)))),
        (
            "at the maximum, a sum across units",
            each(&|f| Some(spell(f.limits().1, 2))),
        ),
        ("at the minimum", each(&|f| Some(spell(f.limits().0, 1)))),
        (
            "one past the maximum",
            each(&|f| Some(spell(f.limits().1 + 1, 1))),
        ),
        (
            "one below the minimum",
            each(&|f| (f.limits().0 > 0).then(|| spell(f.limits().0 - 1, 1))),
        ),
        // Past every limit but the class's.
        (
            "1d23h59m59s999ms",
            all("\"1d23h59m59s999ms\"", Some(2 * DAY - 1)),
        ),
        ("100000000d", all("\"100000000d\"", Some(100_000_000 * DAY))),
        (
            "past i64 milliseconds",
            all("\"9223372036854775807ms1ms\"", Some(i64::MAX as u128 + 1)),
        ),
        (
            "past u64 milliseconds in a sum",
            all(
                "\"18446744073709551615ms18446744073709551615ms\"",
                Some(2 * u64::MAX as u128),
            ),
        ),
        (
            "past u64 milliseconds in a term",
            all("\"18446744073709551615h\"", Some(u64::MAX as u128 * HOUR)),
        ),
        (
            "past u64 in the digits",
            all(
                "\"99999999999999999999999d\"",
                Some(99999999999999999999999 * DAY),
            ),
        ),
        ("0s", all("\"0s\"", Some(0))),
    ];
    for m in MALFORMED {
        cases.push((m, all(m, None)));
    }
    for (what, case) in &cases {
        let t = Instant::now();
        rt.block_on(run_case(&sims, &mut daemon, &dir, case));
        eprintln!(
            "{what}: refused {:?} ({:.1}s)",
            refused(case),
            t.elapsed().as_secs_f64()
        );
    }
    daemon.alive("(end)");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "{} cases in {:.1}s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A field's value: the base value (none), or one drawn at or around its limits, spelled one
/// of several ways, or not a duration.
fn draw(f: Field, want_valid: bool, pick: usize, style: usize) -> Value {
    if want_valid {
        let v = valid_totals(f);
        return spell(v[pick % v.len()], style);
    }
    let v = invalid_totals(f);
    let n = v.len() + MALFORMED.len();
    match pick % n {
        i if i < v.len() => spell(v[i], style),
        i => Value {
            yaml: MALFORMED[i - v.len()].to_string(),
            ms: None,
        },
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

/// Configs drawn with every field at, inside or past its limits: half of them wholly
/// accepted, half with at least one value refused.
#[test]
fn drawn_durations_are_judged_alike_by_check_start_and_reload() {
    let started = Instant::now();
    let rt = runtime();
    let dir = temp_dir("drawn");
    let sims = rt.block_on(Sims::start());
    let base = sims.config(&vec![None; FIELDS.len()]);
    let daemon = std::cell::RefCell::new(rt.block_on(Daemon::start(&dir, base)));
    let strategy = (
        any::<bool>(),
        proptest::collection::vec(
            (any::<bool>(), any::<bool>(), any::<usize>(), 0..4usize),
            FIELDS.len(),
        ),
    )
        .prop_map(|(accept, fields)| {
            let mut case: Case = FIELDS
                .iter()
                .zip(&fields)
                .map(|(f, (set, valid, pick, style))| {
                    set.then(|| draw(*f, accept || *valid, *pick, *style))
                })
                .collect();
            if !accept && refused(&case).is_empty() {
                let (_, _, pick, style) = fields[0];
                let i = pick % FIELDS.len();
                case[i] = Some(draw(FIELDS[i], false, pick / FIELDS.len(), style));
            }
            case
        });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let (accepted, refusing) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let result = runner.run(&strategy, |case| {
        let counter = if refused(&case).is_empty() {
            &accepted
        } else {
            &refusing
        };
        counter.set(counter.get() + 1);
        rt.block_on(run_case(&sims, &mut daemon.borrow_mut(), &dir, &case));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    daemon.borrow_mut().alive("(end)");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "{} cases ({} accepted, {} refused) in {:.1}s",
        cases(),
        accepted.get(),
        refusing.get(),
        started.elapsed().as_secs_f64()
    );
}
