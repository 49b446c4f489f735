//! parrun inside a Rust program: a data tool that runs its users' per-record transforms.
//!
//! The host gives the scripts a function (`rate`, a currency's exchange rate from a table the
//! program owns), loads a transform written in Lua and the same one written in Rhai
//! (examples/embed/), maps it over 10,000 records on a pool in each execution model, and
//! prints what each run made of them and how fast. Then it shows what a failing record looks
//! like: the error names the item and the script's line.
//!
//! ```text
//! cargo run --release --example embed [RECORDS]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use parrun::{Error, Mode, Runtime};
use serde::{Deserialize, Serialize};

/// A record as the program holds it; scripts see a table (Lua) or a map (Rhai).
#[derive(Serialize, Clone)]
struct Record {
    id: u32,
    currency: String,
    amount: f64,
}

/// What the transform makes of a record.
#[derive(Deserialize)]
struct Priced {
    id: u32,
    eur: f64,
    band: String,
}

/// What one run made of the records: the total in euros and how many fell in each band.
#[derive(PartialEq, Debug)]
struct Summary {
    total_eur: f64,
    bands: BTreeMap<String, usize>,
}

fn main() -> anyhow::Result<()> {
    let count: u32 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| anyhow::anyhow!("RECORDS must be a number: {n}"))?,
        None => 10_000,
    };
    let records = records(count);
    let rates: Arc<HashMap<String, f64>> = Arc::new(
        [("EUR", 1.0), ("USD", 0.92), ("GBP", 1.17), ("JPY", 0.0062)]
            .into_iter()
            .map(|(currency, rate)| (currency.to_owned(), rate))
            .collect(),
    );
    // Scripts are named in errors as they are loaded: relative to the repository.
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR"))?;
    let scripts = Path::new("examples/embed");

    println!("{count} records, one transform in Lua and in Rhai, on a pool in each model:");
    let mut summaries = Vec::new();
    for mode in [Mode::Gil, Mode::Fork, Mode::Isolated] {
        let rates = rates.clone();
        let runtime = Runtime::new()
            .mode(mode)
            .function("rate", move |(currency,): (String,)| {
                rates
                    .get(&currency)
                    .copied()
                    .ok_or_else(|| format!("no rate for {currency}"))
            });
        for file in ["transform.lua", "transform.rhai"] {
            let script = runtime.load_file(scripts.join(file))?;
            let start = Instant::now();
            let priced: Vec<Priced> = script.map("transform", records.clone())?;
            let seconds = start.elapsed().as_secs_f64();
            let summary = summarise(&records, &priced)?;
            println!(
                "  {file:<15} {mode:<9} {:>8.0} records/s   total {:>12.2} EUR   {}",
                f64::from(count) / seconds,
                summary.total_eur,
                summary
                    .bands
                    .iter()
                    .map(|(band, n)| format!("{band} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            summaries.push(summary);
        }
    }
    let agree = summaries.windows(2).all(|pair| pair[0] == pair[1]);
    println!(
        "all {} runs agree: {}",
        summaries.len(),
        if agree { "yes" } else { "NO" }
    );

    // A record the transform cannot price: the map fails, naming the item and the line.
    let runtime = Runtime::new().function("rate", move |(currency,): (String,)| {
        rates
            .get(&currency)
            .copied()
            .ok_or_else(|| format!("no rate for {currency}"))
    });
    let mut bad = records.iter().take(5).cloned().collect::<Vec<_>>();
    bad[3].currency = "XYZ".into();
    for file in ["transform.lua", "transform.rhai"] {
        let script = runtime.load_file(scripts.join(file))?;
        // Errors are data: the item's index, then the script's file, line and message (and
        // a traceback, which printing the error would show too).
        match script.map::<_, Priced>("transform", bad.clone()) {
            Err(Error::Item { index, error }) => match *error {
                Error::Script(e) => println!(
                    "record {index} in an unknown currency: {}:{}: {}",
                    e.file.unwrap_or_default(),
                    e.line.unwrap_or_default(),
                    e.message
                ),
                other => anyhow::bail!("{file}: record {index} failed otherwise: {other}"),
            },
            Err(e) => anyhow::bail!("{file}: the map failed otherwise: {e}"),
            Ok(_) => anyhow::bail!("{file}: the unknown currency was priced"),
        }
    }
    // Checked after the error demonstration, so a disagreement still shows everything.
    anyhow::ensure!(agree, "the runs disagree: {summaries:?}");
    Ok(())
}

/// `count` records in four currencies, amounts spread over 0..200.
fn records(count: u32) -> Vec<Record> {
    let currencies = ["EUR", "USD", "GBP", "JPY"];
    (0..count)
        .map(|id| Record {
            id,
            currency: currencies[id as usize % currencies.len()].to_owned(),
            amount: f64::from(id.wrapping_mul(7919) % 20_000) / 100.0,
        })
        .collect()
}

/// Sums a run's results, checking they came back in input order.
fn summarise(records: &[Record], priced: &[Priced]) -> anyhow::Result<Summary> {
    anyhow::ensure!(priced.len() == records.len(), "{} results", priced.len());
    let mut summary = Summary {
        total_eur: 0.0,
        bands: BTreeMap::new(),
    };
    for (record, result) in records.iter().zip(priced) {
        anyhow::ensure!(record.id == result.id, "result {} out of order", result.id);
        summary.total_eur += result.eur;
        *summary.bands.entry(result.band.clone()).or_default() += 1;
    }
    Ok(summary)
}
