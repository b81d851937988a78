from raygen.cli import main
import sys

sys.exit(main())
