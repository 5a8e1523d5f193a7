# Time lme4::glmer on one model, in-process, and print one JSON object on stdout.
# Called by bench/bench_fit.py (the glmer block):
#
#   Rscript bench/bench_glmer.R DATA.csv FORMULA FACTORS FAMILY REPEATS
#
# FACTORS: comma-separated columns made R factors (levels sorted as text).  One untimed
# warm-up fit first.  bench/data/VerbAgg.csv was exported from lme4 1.1-31 with
#   Rscript -e 'library(lme4); write.csv(VerbAgg, "bench/data/VerbAgg.csv", row.names = FALSE)'
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[[1]])
form <- as.formula(args[[2]])
for (col in strsplit(args[[3]], ",", fixed = TRUE)[[1]]) {
  data[[col]] <- factor(as.character(data[[col]]), levels = sort(unique(as.character(data[[col]]))))
}
fam <- get(args[[4]])()
repeats <- as.integer(args[[5]])
fit <- glmer(form, data = data, family = fam)
times <- numeric(repeats)
for (i in seq_len(repeats)) {
  start <- as.numeric(Sys.time())
  fit <- glmer(form, data = data, family = fam)
  times[i] <- as.numeric(Sys.time()) - start
}
cat(sprintf('{"median": %.17g, "deviance": %.17g}\n', median(times), -2 * as.numeric(logLik(fit))))
