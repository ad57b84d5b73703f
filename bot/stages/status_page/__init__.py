"""`bot status --html DIR`: a static status site from the ledger and the run manifests.

    model.collect_site(settings) -> SiteView    (typed rows, every cell already in words via bot.present)
    render.write_site(site, settings, out_dir)  (index, one page per run with its chart; swapped in whole)
"""
