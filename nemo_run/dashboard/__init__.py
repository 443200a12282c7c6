"""`nemorun dashboard`: a web page of every experiment and job, with live logs.

Only the `nemorun dashboard` command imports this package (its server stack, Starlette and
uvicorn, is the optional `dashboard` extra). `index` caches the experiment folders, `views`
reads what pages show from that cache and the job store, `svg` draws the DAG and timeline,
`pages` writes the HTML and `server` serves it.
"""
