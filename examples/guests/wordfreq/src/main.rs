//! A WASI command for the worker: reads text on stdin, prints the most
//! frequent words with their counts, one per line.
//!
//! `wordfreq [-n COUNT]` (default 10). Exits 1 if stdin has no words, 2 on
//! bad arguments: the exit code is part of the result.
//!
//! Build: `cargo build --release --target wasm32-wasip1 -p guest-wordfreq`,
//! then `worker run target/wasm32-wasip1/release/guest-wordfreq.wasm -- -n 5 < README.md`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let top = match args.as_slice() {
        [] => 10,
        [flag, count] if flag == "-n" => match count.parse::<usize>() {
            Ok(count) => count,
            Err(_) => return usage(),
        },
        _ => return usage(),
    };
    let mut text = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("wordfreq: cannot read stdin: {error}");
        return ExitCode::from(2);
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
    {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    if counts.is_empty() {
        eprintln!("wordfreq: no words on stdin");
        return ExitCode::from(1);
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = std::io::stdout().lock();
    for (word, count) in ranked.into_iter().take(top) {
        if writeln!(out, "{count:>7} {word}").is_err() {
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: wordfreq [-n COUNT] < text");
    ExitCode::from(2)
}
