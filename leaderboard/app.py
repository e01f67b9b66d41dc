"""EM Arena leaderboard: runs the Gradio app of the installed `emarena` package.

    python leaderboard/app.py --results-dir results/ [--requests-dir requests/] [--port 7860]
    python leaderboard/app.py --help

The app itself is `emarena.leaderboard.app` (inside the package, so `emarena space build`
puts the very same app into a Hugging Face Space folder); this file only starts it.
"""

from emarena.leaderboard.app import main

if __name__ == "__main__":
    main()
