import sys

from rhvae.interfaces.cli import main

sys.exit(main())
